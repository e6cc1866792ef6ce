// Package sandbox is kindling's runtime: sandboxes that outlive the command
// that started them. It gives each sandbox an ID and a directory under a
// state root, keeps its state in a versioned, atomically written file under a
// cross-process lock, sets up its taps and network namespace, and runs a
// small monitor process per sandbox that parents the VMM, records how it
// exited, keeps a bounded console log and releases the sandbox's host
// resources whenever the VM ends. Status is always reconciled with what the
// host shows, so a crashed monitor or VMM is reported and collected by GC.
//
// It knows nothing of Firecracker's API: it drives VMMs through package vmm.
// The kindling CLI is its main importer; programs that embed it must call
// MonitorMain first thing in main, because the monitor is the program itself,
// re-executed.
package sandbox
