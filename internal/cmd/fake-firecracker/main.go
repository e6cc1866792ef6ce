// Command fake-firecracker is a stand-in for the Firecracker VMM in tests:
// it takes Firecracker's flags and serves its API on a Unix socket, with the
// behaviour of the release named in $FAKEFC. See package fakefc.
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/kindling-vm/kindling/internal/fakefc"
)

func main() {
	// Started under a name holding "jailer" (testutil.FakeJailer's link),
	// it plays the jailer.
	if strings.Contains(filepath.Base(os.Args[0]), "jailer") {
		os.Exit(fakefc.JailerMain(os.Args[1:], os.Stderr))
	}
	os.Exit(fakefc.Main(os.Args[1:], os.Stdout, os.Stderr))
}
