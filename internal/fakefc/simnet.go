package fakefc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// simNIC is one virtio-net device of a simulated guest: the host tap
// Firecracker would open and the MAC the guest's interface gets.
type simNIC struct {
	tap string // host_dev_name
	mac string // guest_mac; "" lets the guest pick one
}

// simNICs lists the VM's network interfaces in the order they were added,
// which is the order a guest kernel names them eth0, eth1, …; m.mu is held.
func (m *vm) simNICs() []simNIC {
	var out []simNIC
	for _, n := range m.nets {
		out = append(out, simNIC{tap: str(n, "host_dev_name"), mac: str(n, "guest_mac")})
	}
	return out
}

// kernelIP is what the kernel's ip= argument asks for (the static form
// ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF[:DNS0[:DNS1]]).
type kernelIP struct {
	addr   netip.Prefix
	gw     netip.Addr
	device string // "" for the first interface
}

// parseKernelIP reads a static ip= value; ok is false for anything the
// simulated kernel does not configure (dhcp, off, no address).
func parseKernelIP(v string) (kernelIP, bool) {
	f := strings.Split(v, ":")
	for len(f) < 7 {
		f = append(f, "")
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil || !a.Is4() {
		return kernelIP{}, false
	}
	bits := 32
	if f[3] != "" {
		m := net.ParseIP(f[3]).To4()
		if m == nil {
			return kernelIP{}, false
		}
		ones, size := net.IPMask(m).Size()
		if size == 0 {
			return kernelIP{}, false
		}
		bits = ones
	} else if a.IsPrivate() {
		// The kernel guesses the netmask from the address class; a
		// simulated guest only needs the common private ranges.
		switch {
		case a.As4()[0] == 10:
			bits = 8
		case a.As4()[0] == 172:
			bits = 16
		default:
			bits = 24
		}
	}
	ip := kernelIP{addr: netip.PrefixFrom(a, bits), device: f[5]}
	if gw, err := netip.ParseAddr(f[2]); err == nil && gw.Is4() {
		ip.gw = gw
	}
	return ip, true
}

// lastKernelIP returns the value of the last ip= argument before "--".
func lastKernelIP(cmdline string) string {
	kernel, _, _ := strings.Cut(" "+cmdline+" ", " -- ")
	v := ""
	for _, f := range strings.Fields(kernel) {
		if s, ok := strings.CutPrefix(f, "ip="); ok {
			v = s
		}
	}
	return v
}

// wireNet gives the guest, whose init has not run yet, its network
// devices: for each NIC it opens the host tap by name in the fake's own
// namespace, as Firecracker's virtio-net does, makes the guest's ethN (a
// tap in the guest's namespace, with the NIC's MAC) and copies frames
// between the two. Then it does what the guest kernel does with an ip=
// argument: address and default route on the device it names, all
// devices and lo up. On error nothing of it is left open.
func (g *simGuest) wireNet(nics []simNIC, cmdline string) (err error) {
	defer func() {
		if err != nil {
			g.closeWires()
		}
	}()
	nsPath := fmt.Sprintf("/proc/%d/ns/net", g.pid)
	for i, nic := range nics {
		name := "eth" + strconv.Itoa(i)
		host, err := netdev.AttachTap(nic.tap, "")
		if err != nil {
			return fmt.Errorf("open tap device %q: %w", nic.tap, err)
		}
		guest, err := netdev.AttachTap(name, nsPath)
		if err != nil {
			host.Close()
			return fmt.Errorf("make the guest's %s: %w", name, err)
		}
		g.wires = append(g.wires, netdev.NewWire(host, guest))
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("guest network namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("guest network namespace: %w", err)
	}
	defer h.Close()
	ip, static := parseKernelIP(lastKernelIP(cmdline))
	if static && ip.device == "" && len(nics) > 0 {
		ip.device = "eth0"
	}
	for i, nic := range nics {
		name := "eth" + strconv.Itoa(i)
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("guest %s: %w", name, err)
		}
		if nic.mac != "" {
			hw, err := net.ParseMAC(nic.mac)
			if err != nil {
				return fmt.Errorf("guest %s: MAC %q: %w", name, nic.mac, err)
			}
			if err := h.LinkSetHardwareAddr(l, hw); err != nil {
				return fmt.Errorf("guest %s: set MAC: %w", name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("guest %s: up: %w", name, err)
		}
		if !static || ip.device != name {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.addr.Addr().AsSlice(), Mask: net.CIDRMask(ip.addr.Bits(), 32)}}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("guest %s: address %s: %w", name, ip.addr, err)
		}
		if ip.gw.IsValid() {
			r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: ip.gw.AsSlice()}
			if err := h.RouteAdd(r); err != nil {
				return fmt.Errorf("guest %s: default route via %s: %w", name, ip.gw, err)
			}
		}
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	return nil
}

// closeWires stops copying frames; the guest's taps go with their files,
// the host taps stay (they are the caller's, as with Firecracker).
func (g *simGuest) closeWires() {
	var errs []error
	for _, w := range g.wires {
		errs = append(errs, w.Close())
	}
	g.wires = nil
	if err := errors.Join(errs...); err != nil {
		g.log.warn("fc_api", "Simulated guest: close its network devices: %v", err)
	}
}
