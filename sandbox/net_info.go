package sandbox

import (
	"github.com/kindling-vm/kindling/network"
)

// NetworkInfo is what a started sandbox's network is, as inspect and ps
// show it: where the host reaches it and what each guest interface was
// given.
type NetworkInfo struct {
	// Kind is "cni" (--net cni:NETWORK) or "slot" (--net slot).
	Kind string `json:"kind"`
	// NetNS is the namespace the VMM runs in.
	NetNS string `json:"netns"`
	// HostAddress is where the host reaches the sandbox: a slot's unique
	// address, or the first CNI interface's address.
	HostAddress string `json:"host_address,omitempty"`
	// Interfaces are the guest's interfaces, eth0 first.
	Interfaces []NetInterfaceInfo `json:"interfaces"`
	// Ports are the published ports, HOSTPORT:GUESTPORT/PROTO.
	Ports []string `json:"ports,omitempty"`
	// Egress is the egress policy in force; nil for none (open).
	Egress *network.EgressPolicy `json:"egress,omitempty"`
}

// NetInterfaceInfo is one guest interface.
type NetInterfaceInfo struct {
	// Network is the CNI network; empty for a slot.
	Network string `json:"network,omitempty"`
	// Tap is the VMM's tap, in NetNS.
	Tap string `json:"tap"`
	// Address is the guest's address and prefix (as 10.1.2.3/24).
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
	MAC     string `json:"mac"`
}

// networkInfo describes the network record rec holds; nil for none.
func networkInfo(n *network.Record) *NetworkInfo {
	if n == nil {
		return nil
	}
	in := &NetworkInfo{NetNS: n.NetNS()}
	if t := n.Target(); t.IsValid() {
		in.HostAddress = t.String()
	}
	add := func(netName, tap string, g network.GuestConfig) {
		i := NetInterfaceInfo{Network: netName, Tap: tap, MAC: g.MAC}
		if g.Address.IsValid() {
			i.Address = g.Address.String()
		}
		if g.Gateway.IsValid() {
			i.Gateway = g.Gateway.String()
		}
		in.Interfaces = append(in.Interfaces, i)
	}
	switch {
	case n.CNI != nil:
		in.Kind = "cni"
		for _, c := range n.CNI.Interfaces {
			add(c.Network, c.Tap, c.Guest)
		}
	case n.Slot != nil:
		in.Kind = "slot"
		add("", n.Slot.Tap, n.Slot.Guest)
	}
	if n.Ports != nil {
		for _, p := range n.Ports.Ports {
			in.Ports = append(in.Ports, p.String())
		}
	}
	if n.Egress != nil {
		p := n.Egress.Policy
		in.Egress = &p
	}
	return in
}
