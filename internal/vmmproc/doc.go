// Package vmmproc runs one Firecracker (or jailer) process for a sandbox's
// monitor: it starts the command line its caller built, in a network
// namespace when asked, feeds the process's stdout (the serial console) to
// a writer, keeps the last lines of its stderr, reaps it and ends it by
// signal. It also holds the few host clean-ups the monitor does once the
// VMM has gone: deleting its taps (ioctl, no netlink) and removing its jail.
//
// It is what the small monitor (cmd/kindling-monitor) links instead of the
// VMM driver: it imports no HTTP client, no netlink, no OpenTelemetry and
// not package vmm, which talks to the process's API from the monitor's
// starter (see vmm.WithSpawner). Its importers are internal/monitor and,
// for shared clean-ups, vmm and sandbox.
package vmmproc
