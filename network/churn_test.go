package network

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestChurnLeavesNothing sets up and tears down a sandbox's whole network
// 50 times — a CNI attachment and a slot, each with a published port and
// an egress policy — and then audits: no namespace, link, table or lease
// may be left.
func TestChurnLeavesNothing(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	if testing.Short() {
		t.Skip("-short: 50 set-ups and tear-downs")
	}
	ctx := context.Background()
	host := newHost(t)
	c := CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir(), Host: host}
	network, _ := testNetwork(t, c.ConfDir)
	s := Slots{Host: host, NamePrefix: testSlotPrefix}
	ports, _ := ParsePorts([]string{"8080:80", "5353:53/udp"})
	policy, _ := ParseEgress("deny", []string{"10.0.0.0/8", "example.com"})
	opts := LeakOptions{Host: host, SlotPrefix: testSlotPrefix, CNIConfDir: c.ConfDir,
		OwnsID: func(id string) bool { return strings.HasPrefix(id, testPrefix) }}

	for i := range 50 {
		id := fmt.Sprintf("%s-cyc-%d", testPrefix, i)
		att, err := c.Attach(ctx, id, []string{network})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		pub, err := host.Publish(ctx, id, att.Interfaces[0].Guest.Address.Addr(), ports)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		eg, err := host.ApplyEgress(ctx, id, EgressSource{Addr: att.Interfaces[0].Guest.Address.Addr()}, policy)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		slot, err := s.Create(ctx)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		sid := id + "-slot"
		spub, err := host.Publish(ctx, sid, slot.Addr, []PortMapping{{HostPort: 9090, GuestPort: 80, Protocol: "tcp"}})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		seg, err := host.ApplyEgress(ctx, sid, EgressSource{Iface: slot.HostVeth}, policy)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if i == 0 {
			inv, err := Leaks(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			// The audit sees what a live sandbox holds.
			if len(inv.NetNS) != 2 || len(inv.Links) != 1 || len(inv.Tables) != 4 || len(inv.Leases) != 1 {
				t.Errorf("while set up, the audit found %s; want 2 namespaces, 1 link, 4 tables, 1 lease", inv)
			}
		}
		for _, err := range []error{
			host.RemoveEgress(ctx, seg), host.Unpublish(ctx, spub), s.Destroy(ctx, slot),
			host.RemoveEgress(ctx, eg), host.Unpublish(ctx, pub), c.Detach(ctx, att),
		} {
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
		}
	}
	inv, err := Leaks(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Empty() {
		t.Errorf("after 50 cycles: %s", inv)
	}
	links, err := nlIn(t, host.NetNS).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "veth" {
			t.Errorf("veth %s left in the host namespace", l.Attrs().Name)
		}
	}
}
