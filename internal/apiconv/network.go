package apiconv

import (
	"net/netip"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

// NetworkToPB converts a sandbox's network; nil for none.
func NetworkToPB(n *sandbox.NetworkInfo) *pb.Network {
	if n == nil {
		return nil
	}
	p := &pb.Network{Kind: n.Kind, Netns: n.NetNS, HostAddress: n.HostAddress, Ports: n.Ports,
		Egress: EgressToPB(n.Egress)}
	for _, i := range n.Interfaces {
		p.Interfaces = append(p.Interfaces, &pb.NetInterface{Network: i.Network, Tap: i.Tap,
			Address: i.Address, Gateway: i.Gateway, Mac: i.MAC})
	}
	return p
}

// NetworkFromPB converts a sandbox's network; nil for none.
func NetworkFromPB(p *pb.Network) *sandbox.NetworkInfo {
	if p == nil {
		return nil
	}
	n := &sandbox.NetworkInfo{Kind: p.GetKind(), NetNS: p.GetNetns(), HostAddress: p.GetHostAddress(),
		Ports: p.GetPorts(), Egress: EgressFromPB(p.GetEgress())}
	for _, i := range p.GetInterfaces() {
		n.Interfaces = append(n.Interfaces, sandbox.NetInterfaceInfo{Network: i.GetNetwork(), Tap: i.GetTap(),
			Address: i.GetAddress(), Gateway: i.GetGateway(), MAC: i.GetMac()})
	}
	return n
}

// EgressToPB converts an egress policy; nil for none.
func EgressToPB(e *network.EgressPolicy) *pb.EgressPolicy {
	if e == nil {
		return nil
	}
	p := &pb.EgressPolicy{Default: e.Default, Domains: e.Domains}
	for _, c := range e.CIDRs {
		p.Cidrs = append(p.Cidrs, c.String())
	}
	return p
}

// EgressFromPB converts an egress policy; nil for none. A malformed CIDR
// (not one a server sends) is left out.
func EgressFromPB(p *pb.EgressPolicy) *network.EgressPolicy {
	if p == nil {
		return nil
	}
	e := &network.EgressPolicy{Default: p.GetDefault(), Domains: p.GetDomains()}
	for _, c := range p.GetCidrs() {
		if pfx, err := netip.ParsePrefix(c); err == nil {
			e.CIDRs = append(e.CIDRs, pfx)
		}
	}
	return e
}
