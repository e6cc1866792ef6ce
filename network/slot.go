package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// The guest side of every slot: the same in all of them, so that a
// template's clones need no change inside the guest.
const (
	// SlotTap is the tap in every slot's namespace (the VMM's host_dev_name).
	SlotTap = "kdtap0"
	// SlotGuestMAC is the guest MAC every slot expects.
	SlotGuestMAC = "06:00:ac:10:00:02"
	// slotVethInside is the slot's end of its veth, inside its namespace.
	slotVethInside = "veth0"
	// slotTable is the nf_tables table of NAT rules inside a slot.
	slotTable = "kindling_slot"
)

var (
	// SlotGuestAddr is the guest's address in every slot.
	SlotGuestAddr = netip.MustParsePrefix("172.16.0.2/30")
	// SlotGateway is the tap's address in every slot: the guest's gateway
	// and DNS server (see DNSForwarder).
	SlotGateway = netip.MustParsePrefix("172.16.0.1/30")
	// DefaultSlotRange is where slots' host-side addresses come from, a /30
	// per slot: the upper half of RFC 2544's benchmarking block, which is
	// never routed on the internet and which Docker, Kubernetes, Tailscale
	// and home routers leave alone (see docs/networking.md).
	DefaultSlotRange = netip.MustParsePrefix("198.19.0.0/16")
)

// Slots makes and destroys clone-safe network slots. The zero value uses
// DefaultSlotRange, the namespace names "kdslot-<N>" and the caller's
// namespace as the host.
type Slots struct {
	Host Host
	// Range is the host-side address range, a /30 per slot; at most /29.
	Range netip.Prefix
	// NamePrefix starts each slot's namespace name ("kdslot-" when empty).
	// Slots that share a host namespace must share the prefix: the host
	// veth is "kdh<index>" whatever the prefix.
	NamePrefix string
	// TapOwner, if set, may attach to the slots' taps without privilege
	// (a Firecracker run by the jailer as an unprivileged user).
	TapOwner *TapOwner
}

// TapOwner names the user and group allowed to attach to a tap; a
// negative ID leaves that one unset.
type TapOwner struct {
	UID, GID int
}

func (o *TapOwner) netdev() *netdev.Owner {
	if o == nil {
		return nil
	}
	return &netdev.Owner{UID: o.UID, GID: o.GID}
}

// SlotRecord is a slot in use; the runtime persists it and hands it back
// to Destroy (or Pool.Release).
type SlotRecord struct {
	Index    int    `json:"index"`
	NetNS    string `json:"netns"`     // the VMM runs in this namespace
	Tap      string `json:"tap"`       // SlotTap, in NetNS
	HostVeth string `json:"host_veth"` // the veth's end in the host namespace
	// Addr is where the host reaches the sandbox (all of its ports); the
	// guest's traffic leaves with this source address.
	Addr  netip.Addr  `json:"addr"`
	Guest GuestConfig `json:"guest"`
}

func (s Slots) rangeOrDefault() netip.Prefix {
	if s.Range.IsValid() {
		return s.Range.Masked()
	}
	return DefaultSlotRange
}

func (s Slots) prefix() string {
	if s.NamePrefix == "" {
		return slotNetNSPrefix
	}
	return s.NamePrefix
}

// Capacity is how many slots the range holds.
func (s Slots) Capacity() int {
	r := s.rangeOrDefault()
	bits := 32 - r.Bits()
	if bits > 20 {
		bits = 20 // 262144 slots are more than any host runs
	}
	return 1 << (bits - 2)
}

// Validate checks the settings without touching the system.
func (s Slots) Validate() error {
	if r := s.Range; r.IsValid() && (!r.Addr().Is4() || r.Bits() > 29) {
		return invalid("slot range", r.String(), "must be an IPv4 prefix of /29 or shorter")
	}
	if s.NamePrefix != "" {
		if err := netdev.ValidateNetNSName(s.NamePrefix + "0"); err != nil {
			return invalid("slot name prefix", s.NamePrefix, "not usable in a namespace name")
		}
	}
	return nil
}

// slotAddrs returns slot index's host-veth address (the slot's gateway)
// and the slot's own address.
func (s Slots) slotAddrs(index int) (gw, addr netip.Addr) {
	base := s.rangeOrDefault().Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(index) * 4
	a := func(v uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return a(n + 1), a(n + 2)
}

// Create makes a slot at the lowest free index and returns it.
func (s Slots) Create(ctx context.Context) (*SlotRecord, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	for i := range s.Capacity() {
		rec, err := s.CreateAt(ctx, i)
		if errors.Is(err, ErrExists) {
			continue
		}
		return rec, err
	}
	return nil, fmt.Errorf("create slot: all %d slots of %s are taken: %w", s.Capacity(), s.rangeOrDefault(), ErrConflict)
}

// CreateAt makes slot index: its namespace (created exclusively: an index
// in use gives ErrExists), the veth pair, the tap, addresses, routes and
// the NAT table inside the namespace. On failure nothing is left.
func (s Slots) CreateAt(ctx context.Context, index int) (_ *SlotRecord, err error) {
	if index < 0 || index >= s.Capacity() {
		return nil, invalid("slot index", fmt.Sprint(index), fmt.Sprintf("outside 0–%d", s.Capacity()-1))
	}
	name := s.prefix() + fmt.Sprint(index)
	nsPath, err := netdev.CreateNetNS(name)
	if errors.Is(err, netdev.ErrExists) {
		return nil, fmt.Errorf("create slot %d: namespace %s %w", index, name, ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("create slot %d: %w", index, err)
	}
	gw, addr := s.slotAddrs(index)
	rec := &SlotRecord{
		Index: index, NetNS: nsPath, Tap: SlotTap, Addr: addr,
		Guest: GuestConfig{Address: SlotGuestAddr, Gateway: SlotGateway.Addr(),
			DNS: []netip.Addr{SlotGateway.Addr()}, MAC: SlotGuestMAC},
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("create slot %d: %w", index, err), s.Destroy(context.WithoutCancel(ctx), rec))
		}
	}()
	if err := s.wire(ctx, rec, gw); err != nil {
		return nil, err
	}
	return rec, nil
}

// wire builds the inside of a fresh slot namespace.
func (s Slots) wire(ctx context.Context, rec *SlotRecord, gw netip.Addr) error {
	hh, err := netlinkIn(s.Host.NetNS)
	if err != nil {
		return fmt.Errorf("netlink in the host namespace: %w", err)
	}
	defer hh.Close()
	sh, err := netlinkIn(rec.NetNS)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", rec.NetNS, err)
	}
	defer sh.Close()
	nsFD, err := openNS(rec.NetNS)
	if err != nil {
		return err
	}
	defer unix.Close(nsFD)

	// rec.HostVeth is set only once the veth is ours, so that a rollback
	// never deletes a veth of that name that someone else made.
	name := slotVethName(rec.Index)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: slotVethInside,
		PeerNamespace: netlink.NsFd(nsFD)}
	if err := hh.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("veth %s: %w", name, ErrExists)
		}
		return fmt.Errorf("add veth %s: %w", name, err)
	}
	rec.HostVeth = name
	if err := addrUp(hh, rec.HostVeth, netip.PrefixFrom(gw, 30)); err != nil {
		return err
	}
	if err := addrUp(sh, slotVethInside, netip.PrefixFrom(rec.Addr, 30)); err != nil {
		return err
	}
	if err := addrUp(sh, "lo", netip.Prefix{}); err != nil {
		return err
	}
	if err := sh.RouteAdd(&netlink.Route{Gw: net.IP(gw.AsSlice())}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	if _, err := netdev.CreateTap(ctx, netdev.TapSpec{Name: SlotTap, NetNS: rec.NetNS, Owner: s.TapOwner.netdev()}); err != nil {
		return err
	}
	if err := addrUp(sh, SlotTap, SlotGateway); err != nil {
		return err
	}
	if err := setSysctl(rec.NetNS, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := setSysctl(s.Host.NetNS, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	return s.natTable(rec)
}

// reusedSlotNetNS reports whether the namespace name holds a veth0: a
// slot wired by someone since this record's slot was destroyed. A missing
// namespace, or one without veth0 (what a destroy that stopped between the
// veth and the namespace leaves), is not.
func reusedSlotNetNS(name string) bool {
	path := filepath.Join(netdev.NetNSDir, name)
	if _, err := os.Stat(path); err != nil {
		return false
	}
	h, err := netlinkIn(path)
	if err != nil {
		return false
	}
	defer h.Close()
	_, err = h.LinkByName(slotVethInside)
	return err == nil
}

// addrUp adds addr (if valid) to the link name and brings it up.
func addrUp(h *netlink.Handle, name string, addr netip.Prefix) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if addr.IsValid() {
		ipn := &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	return nil
}

// natTable writes the slot's NAT at its edge: what arrives for the slot's
// address goes to the guest; what the guest sends leaves from the slot's
// address; anything from the tap with a forged source is dropped.
func (s Slots) natTable(rec *SlotRecord) error {
	c, err := nftIn(rec.NetNS)
	if err != nil {
		return err
	}
	defer closeNft(c)
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: slotTable})
	pre := c.AddChain(&nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	drop := nftables.ChainPolicyDrop
	fwd := c.AddChain(&nftables.Chain{Table: t, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	guest := SlotGuestAddr.Addr().AsSlice()
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: concat(
		matchIif(slotVethInside), matchIPDaddr(rec.Addr),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: guest},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(
		matchOif(slotVethInside), matchIPSaddr(SlotGuestAddr.Addr()),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: rec.Addr.AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})})
	// Forward only the guest's own address out, and replies back in.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIif(SlotTap), matchIPSaddr(SlotGuestAddr.Addr()), accept())})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIif(slotVethInside), matchOif(SlotTap), accept())})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables in %s: %w", rec.NetNS, err)
	}
	return nil
}

// Destroy deletes the slot's host veth (at once, rather than when the
// kernel gets round to the namespace) and its namespace, with the tap and
// the NAT table in it. It is idempotent. Namespace names are shared by
// every process on the host, so a repeated call leaves alone a slot made
// since at the same index from another host namespace: once this slot's
// host veth is gone (its peer, veth0, went with it), a namespace of that
// name holding a veth0 is another slot's. (Within one host namespace the
// host veth's name is the index's too; the runtime's bookkeeping, which
// forgets a slot once its Destroy returned nil, keeps that case away.)
func (s Slots) Destroy(ctx context.Context, rec *SlotRecord) error {
	if rec == nil {
		return nil
	}
	var errs []error
	vethGone := false
	if h, err := netlinkIn(s.Host.NetNS); err != nil {
		errs = append(errs, err)
	} else {
		l, err := h.LinkByName(rec.HostVeth)
		switch {
		case rec.HostVeth == "":
		case err == nil:
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", rec.HostVeth, err))
			}
		case errors.As(err, new(netlink.LinkNotFoundError)):
			vethGone = true
		}
		h.Close()
	}
	name := s.prefix() + fmt.Sprint(rec.Index)
	if rec.NetNS != "" {
		name = filepath.Base(rec.NetNS) // as made, whatever this Slots' prefix
	}
	if vethGone && reusedSlotNetNS(name) {
		return nil
	}
	if err := netdev.DeleteNetNS(name); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("destroy slot %d: %w", rec.Index, errors.Join(errs...))
	}
	return nil
}
