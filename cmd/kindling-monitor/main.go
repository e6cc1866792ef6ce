// Command kindling-monitor is the monitor of one sandbox: the parent of its
// Firecracker for the VM's whole life (see internal/monitor). kindling
// starts it, from the directory of the kindling executable, for each
// sandbox; it is not run by hand. It spawns and reaps the VMM and links
// only internal/vmmproc and the state store, not the VMM driver (its
// starter configures the VMM through the API), so that each sandbox costs
// little host memory beyond its Firecracker. Without it, kindling re-executes itself as the monitor
// ('kindling check' says which is used).
//
// Install it next to kindling: go install ./cmd/kindling ./cmd/kindling-monitor
package main

import (
	"fmt"
	"os"

	"github.com/kindling-vm/kindling/internal/monitor"
)

func main() {
	if !monitor.Requested() {
		fmt.Fprintln(os.Stderr, "kindling-monitor: kindling starts this program as the monitor of each sandbox; it is not run by hand")
		os.Exit(2)
	}
	if os.Getenv(monitor.EnvRelease) != "" {
		// A runtime whose monitor program is this one has no program to
		// tear down networks or run a DNS forwarder with.
		fmt.Fprintln(os.Stderr, "kindling-monitor: it cannot tear down a sandbox's networks or run its DNS forwarder: give the runtime the kindling program as its monitor executable, with kindling-monitor next to it")
		os.Exit(1)
	}
	os.Exit(monitor.Main(monitor.Hooks{}))
}
