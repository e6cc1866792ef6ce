// Command fake-firecracker is a stand-in for the Firecracker VMM in tests:
// it takes Firecracker's flags and serves its API on a Unix socket, with the
// behaviour of the release named in $FAKEFC. See package fakefc.
package main

import (
	"os"

	"github.com/kindling-vm/kindling/internal/fakefc"
)

func main() {
	os.Exit(fakefc.Main(os.Args[1:], os.Stdout, os.Stderr))
}
