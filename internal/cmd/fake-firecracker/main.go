// Command fake-firecracker is a stand-in for the Firecracker VMM in tests:
// it takes Firecracker's flags and serves its API on a Unix socket, with the
// behaviour of the release named in $FAKEFC. See package fakefc.
package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kindling-vm/kindling/internal/fakefc"
)

// The main goroutine keeps the main thread, the one /proc/PID shows, to
// itself: the fake's own threads (the vCPUs', the simulated guest's, which
// leaves the jail and takes back root to play KVM's part) are locked to
// the threads they start on, and must never be that one, or a jailed
// fake would show root's uid and root directory for the whole process.
func init() { runtime.LockOSThread() }

func main() {
	// Started under a name holding "jailer" (testutil.FakeJailer's link),
	// it plays the jailer.
	if strings.Contains(filepath.Base(os.Args[0]), "jailer") {
		os.Exit(fakefc.JailerMain(os.Args[1:], os.Stderr))
	}
	os.Exit(fakefc.Main(os.Args[1:], os.Stdout, os.Stderr))
}
