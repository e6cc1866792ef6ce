// Package monitor is the core of a sandbox's monitor: the process that is
// its VMM's parent for the VMM's whole life. It starts the VMM from a Plan
// its starter (package sandbox) hands it on stdin, records it as running,
// captures the serial console into a bounded log, reaps the VMM, records
// how it ended and releases the sandbox's taps and sockets.
//
// It is kept light on purpose: it imports the VMM driver, the state store
// and the tap helpers, never the network package (CNI, nftables), the guest
// agent's client or the image code, so that cmd/kindling-monitor, the small
// executable each sandbox runs, costs little memory. What needs the heavy
// libraries at a sandbox's end (the tear-down of its CNI networks) is done
// by Hooks.ReleaseNetwork when the monitor is the full kindling program
// re-executed, and otherwise by running the starter's program (Plan.Helper)
// for that tear-down only.
//
// The monitor does not know the sandbox's record type: it reads and writes
// the few fields it owns (status, machine, started_at, exit) and keeps the
// others as they are (see record). Its importers are package sandbox and
// cmd/kindling-monitor.
package monitor
