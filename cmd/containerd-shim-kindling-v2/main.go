// Command containerd-shim-kindling-v2 is kindling's containerd runtime v2
// shim (runtime type io.containerd.kindling.v2): containerd starts it, and
// it runs each pod sandbox (or plain task) in a Firecracker microVM through
// kindling's runtime. See docs/kubernetes.md and package shim.
//
// Configuration comes from containerd's environment: KINDLING_KERNEL (the
// guest kernel, required), KINDLING_AGENT (the guest agent; default
// kindling-agent next to this binary), KINDLING_FIRECRACKER (default:
// firecracker on PATH), KINDLING_SHIM_ROOT (default
// /run/kindling/containerd), and, as root, KINDLING_JAILER (default:
// jailer on PATH or installed) or KINDLING_NO_JAILER=1 (no jailer): with
// neither, tasks are refused.
package main

import (
	shimlib "github.com/containerd/containerd/runtime/v2/shim"

	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/shim"
)

func main() {
	// The sandbox monitor is this binary re-executed.
	sandbox.MonitorMain()
	// Descriptors containerd passed without close-on-exec must not reach
	// the serving shim, the monitors and the VMMs (D7). The listening
	// socket the shim library takes at fd 3 stays usable: net.FileListener
	// works on a duplicate of it.
	_ = kunix.MarkInheritedCloseOnExec()
	// kindling waits for its own children (the sandbox monitors): the
	// library's reaper would take their exit statuses, and as a subreaper
	// the shim would inherit VMMs it never waits for.
	shimlib.Run(shim.RuntimeName, shim.New, func(c *shimlib.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}
