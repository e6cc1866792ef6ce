package main

import (
	"os"

	"github.com/kindling-vm/kindling/agent/container"
)

// The container helper (package agent/container) is this binary run with
// "container" as its first argument, by the shim through the agent's own
// process service. It is dispatched before main so that nothing of the
// agent (flags, PID-1 duties, listeners) runs in it.
func init() {
	if len(os.Args) > 1 && os.Args[1] == container.Arg {
		os.Exit(container.Main(os.Args[2:]))
	}
}
