// Package monitor is the core of a sandbox's monitor: the process that is
// its VMM's parent for the VMM's whole life. It spawns the VMM from a Plan
// its starter (package sandbox) hands it on stdin and reports it (Report,
// on ReportFD); the starter configures and boots the VMM through its API
// (vmm.WithSpawner) and sends a Verdict (VerdictFD): on a commit the
// monitor records the sandbox running, otherwise (an abort, the starter's
// death, SIGTERM) it kills the VMM. It captures the serial console into a
// bounded log, reaps the VMM, records how it ended and releases the
// sandbox's taps and sockets, and, for a VMM run under the jailer, its
// jail (chroot, cgroups, ACL entries) and, when it removes the sandbox,
// its jail uid (Plan.Jail).
//
// It is kept light on purpose: it imports internal/vmmproc (spawn, reap,
// taps by ioctl, jail removal) and the state store, never the VMM driver
// or its HTTP client, netlink, OpenTelemetry, the network package (CNI,
// nftables), the guest agent's client or the image code, so that
// cmd/kindling-monitor, the small executable each sandbox runs, costs
// little memory. What needs the heavy
// libraries is done by Hooks when the monitor is the full kindling program
// re-executed, and otherwise by running the starter's program (Plan.Helper)
// for that work only: the tear-down of a sandbox's CNI networks at its end
// (EnvRelease=network), and the DNS forwarder of a slot network, a child
// for the VMM's life (EnvRelease=dns). A sandbox without either runs no
// helper.
//
// The monitor does not know the sandbox's record type: it reads and writes
// the few fields it owns (status, machine, started_at, exit) and keeps the
// others as they are (see record). Its importers are package sandbox and
// cmd/kindling-monitor.
package monitor
