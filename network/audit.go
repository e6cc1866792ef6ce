package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// Lease is a host-local IPAM lease: an address of a CNI network held by a
// container ID.
type Lease struct {
	Network     string `json:"network"`
	Address     string `json:"address"`
	ContainerID string `json:"container_id"`
}

// hostLocalLeases lists the leases of network in hostLocalDataDir.
func hostLocalLeases(network string) ([]Lease, error) {
	dir := filepath.Join(hostLocalDataDir, network)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list leases of %s: %w", network, err)
	}
	var out []Lease
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == "lock" || strings.HasPrefix(n, "last_reserved_ip") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue // released meanwhile
		}
		id, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out = append(out, Lease{Network: network, Address: n, ContainerID: strings.TrimSpace(id)})
	}
	return out, nil
}

// LeakOptions says where Leaks looks.
type LeakOptions struct {
	// Host is the host namespace (links and nf_tables tables are looked
	// for there).
	Host Host
	// SlotPrefix is the slots' namespace prefix ("kdslot-" when empty).
	SlotPrefix string
	// CNIConfDir names the CNI networks whose host-local leases are
	// listed; "" lists none.
	CNIConfDir string
	// OwnsID, if set, keeps only leases whose container ID it accepts
	// (such as the IDs of the sandboxes the caller made).
	OwnsID func(containerID string) bool
}

// Inventory is what kindling's networking holds on the host.
type Inventory struct {
	NetNS  []string `json:"netns,omitempty"`  // namespace names in /run/netns
	Links  []string `json:"links,omitempty"`  // slot veths and sandbox taps in the host namespace
	Tables []string `json:"tables,omitempty"` // nf_tables tables, as "FAMILY NAME"
	Leases []Lease  `json:"leases,omitempty"` // host-local IPAM leases
	// Shared lists host-wide state that is not any sandbox's (the slots'
	// NAT table); Empty does not count it.
	Shared []string `json:"shared,omitempty"`
}

// Empty reports whether nothing is held.
func (inv Inventory) Empty() bool {
	return len(inv.NetNS)+len(inv.Links)+len(inv.Tables)+len(inv.Leases) == 0
}

// String lists what is held, for a leak report.
func (inv Inventory) String() string {
	var parts []string
	for _, n := range inv.NetNS {
		parts = append(parts, "netns "+n)
	}
	for _, l := range inv.Links {
		parts = append(parts, "link "+l)
	}
	for _, t := range inv.Tables {
		parts = append(parts, "nft table "+t)
	}
	for _, l := range inv.Leases {
		parts = append(parts, fmt.Sprintf("lease %s/%s (%s)", l.Network, l.Address, l.ContainerID))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// Leaks lists kindling's namespaces (kindling-<ID>, slots), links (slot
// veths "kdh<N>", taps "kd" + 12 hex digits) and nf_tables tables
// ("kindling_…") in the host namespace, and the host-local leases of the
// CNI networks in opts.CNIConfDir. The churn command calls it after its
// cycles; with every sandbox gone it must be empty.
func Leaks(ctx context.Context, opts LeakOptions) (Inventory, error) {
	var inv Inventory
	slotPrefix := opts.SlotPrefix
	if slotPrefix == "" {
		slotPrefix = slotNetNSPrefix
	}
	for _, p := range []string{cniNetNSPrefix, slotPrefix} {
		names, err := netdev.ListNetNS(p)
		if err != nil {
			return inv, err
		}
		inv.NetNS = append(inv.NetNS, names...)
	}
	h, err := netlinkIn(opts.Host.NetNS)
	if err != nil {
		return inv, fmt.Errorf("leaks: %w", err)
	}
	links, err := h.LinkList()
	h.Close()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return inv, fmt.Errorf("leaks: list links: %w", err)
	}
	for _, l := range links {
		if n := l.Attrs().Name; isSlotVeth(n) || isSandboxTap(n) {
			inv.Links = append(inv.Links, n)
		}
	}
	c, err := nftIn(opts.Host.NetNS)
	if err != nil {
		return inv, fmt.Errorf("leaks: %w", err)
	}
	tables, err := c.ListTables()
	closeNft(c)
	if err != nil {
		return inv, fmt.Errorf("leaks: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == hostNATTable {
			inv.Shared = append(inv.Shared, familyName(t.Family)+" "+t.Name)
		} else if strings.HasPrefix(t.Name, tablePrefix) {
			inv.Tables = append(inv.Tables, familyName(t.Family)+" "+t.Name)
		}
	}
	if opts.CNIConfDir != "" {
		files, err := libcni.ConfFiles(opts.CNIConfDir, []string{".conflist", ".conf", ".json"})
		if err != nil {
			return inv, fmt.Errorf("leaks: %w", err)
		}
		seen := map[string]bool{}
		for _, f := range files {
			list, err := libcni.NetworkConfFromFile(f)
			if err != nil || seen[list.Name] {
				continue
			}
			seen[list.Name] = true
			ls, err := hostLocalLeases(list.Name)
			if err != nil {
				return inv, err
			}
			for _, l := range ls {
				if opts.OwnsID == nil || opts.OwnsID(l.ContainerID) {
					inv.Leases = append(inv.Leases, l)
				}
			}
		}
	}
	return inv, nil
}

func isSlotVeth(name string) bool {
	rest, ok := strings.CutPrefix(name, slotVethPrefix)
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isSandboxTap(name string) bool {
	rest, ok := strings.CutPrefix(name, "kd")
	if !ok || len(rest) != 12 {
		return false
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return fmt.Sprintf("family%d", f)
}
