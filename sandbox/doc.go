// Package sandbox is kindling's runtime: sandboxes that outlive the command
// that started them. It gives each sandbox an ID and a directory under a
// state root, keeps its state in a versioned, atomically written file under a
// cross-process lock, sets up its taps and network namespace, and runs a
// small monitor process per sandbox that parents the VMM, records how it
// exited, keeps a bounded console log and releases the sandbox's host
// resources whenever the VM ends. Status is always reconciled with what the
// host shows, so a crashed monitor or VMM is reported and collected by GC.
//
// Callers use it through Controller, the small ctx-first interface that
// *Runtime implements and a remote client of a kindling server can
// implement too (plain data in and out); optional capabilities, such as
// drive hotplug (Hotplugger) and running commands and moving files in the
// guest through its agent (Guest, over package agent and the sandbox's
// vsock device), are separate interfaces. Sandboxes carry
// user labels (Spec.Labels) that List selects on; Console and Logs read a
// sandbox's bounded logs, optionally following them. Every error wraps one
// of kindling's sentinels (internal/errdefs), re-exported here as the same
// values (ErrNotFound, ErrExists, ErrInvalid, ErrConflict, ...); messages
// state facts, and the CLI adds the hints.
//
// It knows nothing of Firecracker's API: it drives VMMs through package vmm
// and does not import fcapi. Templates, built on its snapshots, are package
// template. The kindling CLI is its main importer; programs that embed it
// must call MonitorMain first thing in main, because the monitor is the
// program itself, re-executed, unless the small kindling-monitor
// (MonitorExecutableName) is installed next to it — and even then the
// program is run to tear down a sandbox's CNI networks and, for the VM's
// life, to run the DNS forwarder of a sandbox on a slot network.
package sandbox
