package network

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// joinTap creates the tap in the namespace nsPath with the MTU of the CNI
// interface ifName, and joins the two with tc: an ingress qdisc on each and
// a mirred egress redirect to the other. Frames from the CNI interface all
// go to the tap; from the tap only ARP and IPv4 whose source is the guest's
// address go out (the rest reaches the namespace's own stack, which has no
// address on the tap and forwards nothing, so it is dropped). It fills in
// the guest's MAC (the CNI interface's: its peer learned that one) and MTU.
func joinTap(ctx context.Context, nsPath, ifName, tap string, owner *TapOwner, guest *GuestConfig) error {
	h, err := netlinkIn(nsPath)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	eth, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("CNI interface %s in %s: %w", ifName, nsPath, err)
	}
	guest.MAC = eth.Attrs().HardwareAddr.String()
	guest.MTU = eth.Attrs().MTU
	t, err := netdev.CreateTap(ctx, netdev.TapSpec{Name: tap, NetNS: nsPath, MTU: eth.Attrs().MTU, Owner: owner.netdev()})
	if err != nil {
		return err
	}
	if err := addIngress(h, eth.Attrs().Index); err != nil {
		return fmt.Errorf("%s: %w", ifName, err)
	}
	if err := addIngress(h, t.Index); err != nil {
		return fmt.Errorf("%s: %w", tap, err)
	}
	// Everything that arrives on the CNI interface is the guest's. u32 is
	// the classifier every kernel with tc has (flower and matchall are
	// often left out); a nil selector matches everything.
	if err := h.FilterAdd(u32Redirect(eth.Attrs().Index, 1, unix.ETH_P_ALL, nil, t.Index)); err != nil {
		return fmt.Errorf("tc filter %s → %s: %w", ifName, tap, err)
	}
	if err := h.FilterAdd(u32Redirect(t.Index, 1, unix.ETH_P_ARP, nil, eth.Attrs().Index)); err != nil {
		return fmt.Errorf("tc filter %s → %s (ARP): %w", tap, ifName, err)
	}
	if a := guest.Address.Addr(); a.Is4() {
		// IPv4 source address: 4 bytes at offset 12 of the IP header.
		src := &netlink.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{
			{Mask: 0xffffffff, Val: binary.BigEndian.Uint32(a.AsSlice()), Off: 12}}}
		if err := h.FilterAdd(u32Redirect(t.Index, 2, unix.ETH_P_IP, src, eth.Attrs().Index)); err != nil {
			return fmt.Errorf("tc filter %s → %s (IPv4): %w", tap, ifName, err)
		}
	}
	return nil
}

func addIngress(h *netlink.Handle, index int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscAdd(q); err != nil {
		return fmt.Errorf("add ingress qdisc: %w", err)
	}
	return nil
}

// u32Redirect is a u32 filter on index's ingress for protocol proto that
// redirects what sel matches (everything for nil) to the egress of to.
func u32Redirect(index int, prio uint16, proto uint16, sel *netlink.TcU32Sel, to int) *netlink.U32 {
	return &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: index, Parent: netlink.HANDLE_INGRESS,
			Priority: prio, Protocol: proto},
		Sel:     sel,
		Actions: []netlink.Action{redirectTo(to)},
	}
}

func redirectTo(index int) netlink.Action {
	a := netlink.NewMirredAction(index)
	a.MirredAction = netlink.TCA_EGRESS_REDIR
	a.Attrs().Action = netlink.TC_ACT_STOLEN
	return a
}
