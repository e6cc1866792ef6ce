package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/netdev"
)

func TestManagerSlot(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	pool, err := NewPool(w.slots(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close(ctx) })
	if err := pool.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	m := &Manager{Host: w.host, Slots: w.slots(), Pool: pool}
	ports, _ := ParsePorts([]string{"8080:80"})
	deny, _ := ParseEgress("deny", nil)
	rec, err := m.Setup(ctx, Spec{SandboxID: "kdnet-m1", Ports: ports, Egress: &deny})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, rec) })
	if rec.Slot == nil || rec.CNI != nil || rec.NetNS() != rec.Slot.NetNS || rec.Target() != rec.Slot.Addr {
		t.Fatalf("record %+v", rec)
	}
	rl, _ := ParseRate("100Mbit")
	ifs := rec.Interfaces(rl, nil)
	if len(ifs) != 1 || ifs[0].ID != "eth0" || ifs[0].TapName != SlotTap || ifs[0].MAC != SlotGuestMAC || ifs[0].RxRateLimiter != rl {
		t.Errorf("Interfaces = %+v", ifs)
	}
	if got, want := rec.KernelIPArg(), "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1"; got != want {
		t.Errorf("KernelIPArg = %s, want %s", got, want)
	}

	g := startGuest(t, rec.NetNS(), ifs[0].TapName, rec.Guests()[0])
	serve(t, g.ns, "0.0.0.0:80", "guest")
	mustFetch(t, w.host.NetNS, "10.214.0.1:8080", "guest") // published, despite egress deny
	mustNotFetch(t, g.ns, w.server)                        // denied
	allow, _ := ParseEgress("deny", []string{"10.214.0.2"})
	if err := m.SetEgress(ctx, rec, &allow); err != nil {
		t.Fatal(err)
	}
	mustFetch(t, g.ns, w.server, "hello from the server")
	if err := m.SetEgress(ctx, rec, nil); err != nil || rec.Egress != nil {
		t.Fatalf("SetEgress(nil) = %v, record %+v", err, rec.Egress)
	}
	mustFetch(t, g.ns, w.server, "hello from the server")
	g.stop()

	for range 2 {
		if err := m.Teardown(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netdev.ResolveNetNS(rec.Slot.NetNS); !errors.Is(err, netdev.ErrNotFound) {
		t.Errorf("the sandbox's slot namespace after Teardown: %v", err)
	}
	inv, err := Leaks(ctx, LeakOptions{Host: w.host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Tables) != 0 {
		t.Errorf("tables left: %v", inv.Tables)
	}
}

// A set-up that fails late (a port another sandbox holds) gives back the
// CNI attachment it made first: no namespace, no lease.
func TestManagerRollsBack(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	host := newHost(t)
	m := &Manager{Host: host, CNI: CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir()}, Slots: Slots{NamePrefix: testSlotPrefix}}
	network, _ := testNetwork(t, m.CNI.ConfDir)
	ports, _ := ParsePorts([]string{"8080:80"})
	first, err := m.Setup(ctx, Spec{SandboxID: "kdnet-first", Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, first) })
	_, err = m.Setup(ctx, Spec{SandboxID: "kdnet-second", CNINetworks: []string{network}, Ports: ports})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Setup = %v, want the port conflict", err)
	}
	t.Logf("Setup: %v", err)
	if got := leases(t, network); len(got) != 0 {
		t.Errorf("leases left: %v", got)
	}
	inv, err := Leaks(ctx, LeakOptions{Host: host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range inv.NetNS {
		if strings.Contains(n, "kdnet-second") {
			t.Errorf("namespace left: %s", n)
		}
	}
	if len(inv.Tables) != 1 {
		t.Errorf("tables %v, want only the first sandbox's", inv.Tables)
	}
	// Bad specs fail before anything is made.
	for _, spec := range []Spec{
		{SandboxID: "bad id"},
		{SandboxID: "kdnet-x", CNINetworks: []string{"nope"}},
		{SandboxID: "kdnet-x", Ports: []PortMapping{{HostPort: 1, GuestPort: 1, Protocol: "sctp"}}},
		{SandboxID: "kdnet-x", Ports: []PortMapping{{1, 1, "tcp"}, {1, 2, "tcp"}}},
		{SandboxID: "kdnet-x", Egress: &EgressPolicy{Default: "maybe"}},
	} {
		if _, err := m.Setup(ctx, spec); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Setup(%+v) = %v, want a one-line error", spec, err)
		}
	}
	after, _ := Leaks(ctx, LeakOptions{Host: host, SlotPrefix: testSlotPrefix})
	if len(after.NetNS) != len(inv.NetNS) || len(after.Tables) != len(inv.Tables) {
		t.Errorf("bad specs left something: before %s, after %s", inv, after)
	}
}

// A runtime that crashed before it saved the Record still releases
// everything, knowing only the sandbox's ID and spec.
func TestManagerTeardownID(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	host := newHost(t)
	m := &Manager{Host: host, CNI: CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir()}, Slots: Slots{NamePrefix: testSlotPrefix}}
	network, _ := testNetwork(t, m.CNI.ConfDir)
	ports, _ := ParsePorts([]string{"8080:80"})
	more, _ := ParsePorts([]string{"8081:80"})
	deny, _ := ParseEgress("deny", []string{"example.com"})
	cniRec, err := m.Setup(ctx, Spec{SandboxID: "kdnet-lost1", CNINetworks: []string{network}, Ports: ports, Egress: &deny})
	if err != nil {
		t.Fatal(err)
	}
	slotRec, err := m.Setup(ctx, Spec{SandboxID: "kdnet-lost2", Ports: more, Egress: &deny})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, cniRec); m.Teardown(ctx, slotRec) })
	// The conflist is gone too: DEL must use libcni's cached copy.
	if err := os.Remove(filepath.Join(m.CNI.ConfDir, network+".conflist")); err != nil {
		t.Fatal(err)
	}
	if err := m.TeardownID(ctx, "kdnet-lost1", []string{network}); err != nil {
		t.Fatal(err)
	}
	if err := m.TeardownID(ctx, "kdnet-lost2", nil); err != nil {
		t.Fatal(err)
	}
	if got := leases(t, network); len(got) != 0 {
		t.Errorf("leases left: %v", got)
	}
	inv, err := Leaks(ctx, LeakOptions{Host: host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Empty() {
		t.Errorf("after TeardownID: %s", inv)
	}
	if err := m.TeardownID(ctx, "kdnet-lost1", []string{network}); err != nil {
		t.Errorf("second TeardownID: %v", err)
	}
}
