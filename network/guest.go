package network

import (
	"net"
	"net/netip"
	"strings"
)

// GuestConfig is what the guest must be told to use its network interface:
// the runtime passes it to the kernel at boot (KernelIPArg) or to the agent.
type GuestConfig struct {
	// Address is the guest's address and prefix, as 172.16.0.2/30.
	Address netip.Prefix `json:"address"`
	// Gateway is the default route's next hop; invalid for none.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// DNS lists the resolvers to use, best first.
	DNS []netip.Addr `json:"dns,omitempty"`
	// MAC is the address the guest's interface must have (the VMM's
	// guest_mac for it).
	MAC string `json:"mac"`
	// MTU of the interface; 0 for the default.
	MTU int `json:"mtu,omitempty"`
}

// KernelIPArg returns the Linux kernel's "ip=" boot argument that
// configures device (such as "eth0"; "" lets the kernel pick) statically
// from g: ip=CLIENT::GATEWAY:NETMASK::DEVICE:off[:DNS0[:DNS1]]. The kernel
// takes only IPv4 and at most two resolvers; an IPv6 address gives "".
func (g GuestConfig) KernelIPArg(device string) string {
	if !g.Address.IsValid() || !g.Address.Addr().Is4() {
		return ""
	}
	mask := net.IP(net.CIDRMask(g.Address.Bits(), 32)).String()
	gw := ""
	if g.Gateway.IsValid() && g.Gateway.Is4() {
		gw = g.Gateway.String()
	}
	fields := []string{g.Address.Addr().String(), "", gw, mask, "", device, "off"}
	n := 0
	for _, d := range g.DNS {
		if d.Is4() && n < 2 {
			fields = append(fields, d.String())
			n++
		}
	}
	return "ip=" + strings.Join(fields, ":")
}
