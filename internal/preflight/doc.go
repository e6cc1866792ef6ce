// Package preflight checks that a host can run kindling's sandboxes, before
// anything is spawned: a usable /dev/kvm, a Firecracker executable and its
// release, the jailer, the cgroup version, /dev/net/tun, a writable state
// root, tmpfs and user namespaces. Each check gives a Result: ok, warn or
// fail, a one-line detail and, for warn and fail, the fix.
//
// Host.Check runs every check (for 'kindling check'); Host.Preflight runs
// only the blocking ones that 'kindling run', 'start' and 'restore' call
// before they ask the runtime for anything, and returns the first failure
// as one *Error whose message names the thing and the fix. Preflight is
// cheap on a good host: a lookup, a stat and an open of /dev/kvm; it runs an
// executable only when KVM is missing, to ask whether that executable is
// kindling's fake Firecracker (see below).
//
// The fake Firecracker of kindling's tests (internal/fakefc) answers
// --version exactly as the real one does, but the first line of its --help
// says "(fake)". It needs no KVM, so a missing /dev/kvm does not block it:
// Preflight lets it run, and Check reports it as a warning (it runs no VMs).
// This is how the command-line tests run on machines without KVM.
//
// There is no check of /dev/vhost-vsock: Firecracker's vsock device is
// "hybrid", served by the VMM itself and reached through a Unix socket on
// the host, so it needs no vhost module.
//
// What the package reads lives under the directories a Host names (/dev,
// /proc, /sys by default), so tests point them at a temporary directory.
// It is imported by the CLI only; it imports nothing of kindling but
// internal/errdefs.
package preflight
