// Package fakefc is a fake Firecracker: an HTTP server on a Unix socket that
// speaks Firecracker's API with the same rules as a real release (unknown
// fields rejected, pre-boot-only calls refused after InstanceStart), names
// threads fc_vcpu N, writes the guest's console output, and injects faults on
// request. It runs as its own process (internal/cmd/fake-firecracker) so that
// it has a PID, threads and an exit status like the real one.
//
// It is test support only; it shares no code with package fcapi on purpose.
package fakefc
