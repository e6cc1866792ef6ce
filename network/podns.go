package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// JoinNetNS connects a new tap to the interface ifName of a network
// namespace someone else made and configured (a Kubernetes pod's, set up
// by containerd's CRI plugin and its CNI plugins): it reads the address,
// the default gateway, the MAC and the MTU from ifName, creates tap in
// nsPath and joins the two with the same tc redirects as Attach. The VMM
// must run in nsPath with tap and the returned MAC; the guest must be
// given the returned address (KernelIPArg).
//
// An nsPath without ifName is an error matching ErrNotFound; one without
// an address on it, ErrInvalid. On failure the tap is removed again.
func JoinNetNS(ctx context.Context, nsPath, ifName, tap string) (_ GuestConfig, err error) {
	var g GuestConfig
	if err := netdev.ValidateTapName(tap); err != nil {
		var ie *netdev.InvalidError
		if errors.As(err, &ie) {
			return g, invalid(ie.What, ie.Value, ie.Rule)
		}
		return g, err
	}
	h, err := netlinkIn(nsPath)
	if err != nil {
		return g, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return g, fmt.Errorf("interface %s in %s: %w", ifName, nsPath, ErrNotFound)
		}
		return g, fmt.Errorf("interface %s in %s: %w", ifName, nsPath, err)
	}
	if g.Address, err = firstAddress(h, link); err != nil {
		return g, fmt.Errorf("interface %s in %s: %w", ifName, nsPath, err)
	}
	routes, err := h.RouteList(link, unix.AF_INET)
	if err != nil {
		return g, fmt.Errorf("routes of %s in %s: %w", ifName, nsPath, err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok {
				g.Gateway = gw
				break
			}
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, LeaveNetNS(context.WithoutCancel(ctx), nsPath, ifName, tap))
		}
	}()
	if err := joinTap(ctx, nsPath, ifName, tap, nil, &g); err != nil {
		return g, err
	}
	return g, nil
}

// firstAddress is link's first global IPv4 address, else its first global
// IPv6 one.
func firstAddress(h *netlink.Handle, link netlink.Link) (netip.Prefix, error) {
	addrs, err := h.AddrList(link, unix.AF_UNSPEC)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list addresses: %w", err)
	}
	var v6 netip.Prefix
	for _, a := range addrs {
		if a.IPNet == nil || !a.IP.IsGlobalUnicast() {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		if ip.Is4In6() || ip.Is4() {
			return netip.PrefixFrom(ip.Unmap(), bits), nil
		}
		if !v6.IsValid() {
			v6 = netip.PrefixFrom(ip, bits)
		}
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Prefix{}, invalid("interface", link.Attrs().Name, "has no address (did CNI configure it?)")
}

// LeaveNetNS undoes JoinNetNS: it deletes the tap and the ingress qdisc
// (with its redirect filter) of ifName. What is gone already — the tap,
// the interface, the whole namespace — is fine.
func LeaveNetNS(ctx context.Context, nsPath, ifName, tap string) error {
	if _, err := netdev.ResolveNetNS(nsPath); err != nil {
		return nil // the namespace is gone, and all in it
	}
	var errs []error
	if err := netdev.DeleteTap(ctx, tap, nsPath); err != nil && !errors.Is(err, netdev.ErrNotFound) {
		errs = append(errs, err)
	}
	h, err := netlinkIn(nsPath)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("netlink in %s: %w", nsPath, err))...)
	}
	defer h.Close()
	if link, err := h.LinkByName(ifName); err == nil {
		q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index,
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
		if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("delete the ingress qdisc of %s: %w", ifName, err))
		}
	}
	return errors.Join(errs...)
}
