package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

// A pod's network, as containerd's CRI plugin leaves it: a network
// namespace (the sandbox spec's linux.namespaces[network].path) in which
// the CNI plugins made the interface podIfName and gave it the pod's
// address. The shim adds the tap podTap beside it, joins the two with tc
// redirects (package network), runs the VMM in that namespace on the tap
// with the interface's MAC, and gives the guest the pod's address with the
// kernel's ip= argument: the pod IP then reaches the guest's eth0.
const (
	podIfName = "eth0"
	podTap    = "kdtap0"
)

// podNetwork is the pod network a VM was joined to.
type podNetwork struct {
	nsPath string
	guest  network.GuestConfig
}

// netnsPath is the network namespace the spec asks to join; "" for none
// (the host's network, or a new empty namespace).
func netnsPath(sp *specs.Spec) string {
	if sp == nil || sp.Linux == nil {
		return ""
	}
	for _, ns := range sp.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// joinPodNetwork joins a tap to the pod's CNI interface when the spec
// names a network namespace that has one. A namespace without the
// interface (a plain task given an empty namespace) gives a VM without a
// network interface, as the container would have had.
func joinPodNetwork(ctx context.Context, sp *specs.Spec, log *slog.Logger) (*podNetwork, error) {
	ns := netnsPath(sp)
	if ns == "" {
		return nil, nil
	}
	g, err := network.JoinNetNS(ctx, ns, podIfName, podTap)
	if errors.Is(err, network.ErrNotFound) {
		log.Info("pod network namespace has no "+podIfName+": the VM gets no network interface", "netns", ns)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("join the pod's network: %w", err)
	}
	if !g.Address.Addr().Is4() {
		_ = network.LeaveNetNS(context.WithoutCancel(ctx), ns, podIfName, podTap)
		return nil, fmt.Errorf("pod network %s: address %s is IPv6, and only IPv4 pod addresses reach the guest (kernel ip=)", ns, g.Address)
	}
	return &podNetwork{nsPath: ns, guest: g}, nil
}

// apply puts the pod network on the VM's spec.
func (n *podNetwork) apply(vm *sandbox.Spec) {
	vm.NetNS = n.nsPath
	vm.Net = []sandbox.Net{{Tap: podTap, MAC: n.guest.MAC}}
	vm.KernelArgs += " " + n.guest.KernelIPArg(podIfName)
}

// leavePodNetwork removes the tap, the redirect and the port forward's
// loopback redirect from the pod's namespace, if it is still there.
func leavePodNetwork(ctx context.Context, sp *specs.Spec) error {
	ns := netnsPath(sp)
	if ns == "" {
		return nil
	}
	return errors.Join(network.LeaveNetNS(ctx, ns, podIfName, podTap), network.RemoveLoopbackRedirect(ns))
}
