package network

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// testWorld is a host namespace with a server namespace routed behind it:
// the server has 10.214.0.2 on a veth whose host end is 10.214.0.1.
type testWorld struct {
	host   Host
	srvNS  string
	server string // "10.214.0.2:8080"
}

func newWorld(t testing.TB) *testWorld {
	t.Helper()
	w := &testWorld{host: newHost(t), srvNS: newNS(t, "srv"), server: "10.214.0.2:8080"}
	linkNS(t, w.host.NetNS, w.srvNS, "10.214.0.1/30", "10.214.0.2/30")
	addDefaultRoute(t, w.srvNS, "10.214.0.1")
	serve(t, w.srvNS, w.server, "hello from the server")
	return w
}

func (w *testWorld) slots() Slots {
	return Slots{Host: w.host, NamePrefix: testSlotPrefix}
}

// createSlot makes a slot and destroys it at cleanup.
func createSlot(t testing.TB, s Slots) *SlotRecord {
	t.Helper()
	rec, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Destroy(context.Background(), rec); err != nil {
			t.Error(err)
		}
	})
	return rec
}

func TestSlotsCloneSafe(t *testing.T) {
	needRoot(t)
	w := newWorld(t)
	s := w.slots()
	a, b := createSlot(t, s), createSlot(t, s)
	if a.Addr == b.Addr || a.NetNS == b.NetNS || a.HostVeth == b.HostVeth {
		t.Fatalf("two slots share host-side settings: %+v and %+v", a, b)
	}
	if fmt.Sprint(a.Guest) != fmt.Sprint(b.Guest) || a.Tap != b.Tap {
		t.Fatalf("the guest sides differ: %+v and %+v", a.Guest, b.Guest)
	}
	if got, want := a.Addr.String(), "198.19.0.2"; got != want {
		t.Errorf("first slot's address %s, want %s", got, want)
	}
	// Two "clones" with the identical address and MAC, both at once.
	ga := startGuest(t, a.NetNS, a.Tap, a.Guest)
	gb := startGuest(t, b.NetNS, b.Tap, b.Guest)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, g := range []*guest{ga, gb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				got, err := fetch(g.ns, w.server, 0)
				if err == nil && got != "hello from the server" {
					err = fmt.Errorf("got %q", got)
				}
				if err != nil {
					errs <- fmt.Errorf("guest in %s: %w", g.ns, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The host reaches each guest at its slot's address.
	serve(t, ga.ns, "0.0.0.0:80", "guest a")
	serve(t, gb.ns, "0.0.0.0:80", "guest b")
	mustFetch(t, w.host.NetNS, a.Addr.String()+":80", "guest a")
	mustFetch(t, w.host.NetNS, b.Addr.String()+":80", "guest b")
}

func TestSlotDestroyIsIdempotent(t *testing.T) {
	needRoot(t)
	w := newWorld(t)
	s := w.slots()
	rec, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Destroy(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netdev.ResolveNetNS(rec.NetNS); !errors.Is(err, netdev.ErrNotFound) {
		t.Errorf("slot namespace after Destroy: %v", err)
	}
	if _, err := nlIn(t, w.host.NetNS).LinkByName(rec.HostVeth); err == nil {
		t.Errorf("veth %s left in the host namespace", rec.HostVeth)
	}
}

func TestSlotsBadInput(t *testing.T) {
	for _, s := range []Slots{
		{Range: mustPrefix("198.19.0.0/30")},
		{Range: mustPrefix("fd00::/64")},
		{NamePrefix: "a/b"},
	} {
		if _, err := s.Create(context.Background()); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create with %+v = %v, want ErrInvalid", s, err)
		}
	}
}

// Without host NAT a slot reaches only what routes the slot range back to
// the host; with it, anything the host reaches.
func TestSlotHostNAT(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	host := newHost(t)
	far := newNS(t, "far") // knows no route to the slot range
	linkNS(t, host.NetNS, far, "10.216.0.1/30", "10.216.0.2/30")
	serve(t, far, "10.216.0.2:8080", "far away")
	s := Slots{Host: host, NamePrefix: testSlotPrefix}
	a := createSlot(t, s)
	g := startGuest(t, a.NetNS, a.Tap, a.Guest)
	mustNotFetch(t, g.ns, "10.216.0.2:8080")
	if err := s.EnableHostNAT(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.DisableHostNAT(ctx) })
	if err := s.EnableHostNAT(ctx); err != nil {
		t.Fatalf("second EnableHostNAT: %v", err)
	}
	mustFetch(t, g.ns, "10.216.0.2:8080", "far away")
	// The host still sees the slot's own address for what it publishes.
	serve(t, g.ns, "0.0.0.0:80", "guest")
	mustFetch(t, host.NetNS, a.Addr.String()+":80", "guest")
	inv, err := Leaks(ctx, LeakOptions{Host: host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Shared) != 1 || len(inv.Tables) != 0 {
		t.Errorf("audit: shared %v, tables %v; want the NAT table as shared only", inv.Shared, inv.Tables)
	}
	if err := s.DisableHostNAT(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableHostNAT(ctx); err != nil {
		t.Errorf("second DisableHostNAT: %v", err)
	}
	mustNotFetch(t, g.ns, "10.216.0.2:8080")
}

// A jailed Firecracker runs unprivileged: the slot's tap belongs to its
// user and group.
func TestSlotTapOwner(t *testing.T) {
	needRoot(t)
	s := Slots{Host: newHost(t), NamePrefix: testSlotPrefix, TapOwner: &TapOwner{UID: 12345, GID: 23456}}
	rec := createSlot(t, s)
	l, err := nlIn(t, rec.NetNS).LinkByName(rec.Tap)
	if err != nil {
		t.Fatal(err)
	}
	tun, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %T", rec.Tap, l)
	}
	if tun.Owner != 12345 || tun.Group != 23456 {
		t.Errorf("tap owner %d group %d, want 12345 23456", tun.Owner, tun.Group)
	}
}

// A stale veth in the way of a slot's index is not the slot's to delete:
// Create moves on to the next index and leaves it alone.
func TestSlotSkipsForeignVeth(t *testing.T) {
	needRoot(t)
	host := newHost(t)
	h := nlIn(t, host.NetNS)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kdh0"}, PeerName: "kdnetpeer"}); err != nil {
		t.Fatal(err)
	}
	s := Slots{Host: host, NamePrefix: testSlotPrefix}
	rec := createSlot(t, s)
	if rec.Index != 1 || rec.HostVeth != "kdh1" {
		t.Errorf("slot %d on %s, want 1 on kdh1", rec.Index, rec.HostVeth)
	}
	if _, err := h.LinkByName("kdh0"); err != nil {
		t.Errorf("the foreign kdh0 is gone: %v", err)
	}
	if _, err := netdev.ResolveNetNS(testSlotPrefix + "0"); !errors.Is(err, netdev.ErrNotFound) {
		t.Errorf("the namespace of the failed slot 0: %v, want it removed", err)
	}
}

// A repeated Destroy of a slot whose index has been taken since by a slot
// of another host namespace leaves that slot alone (namespace names are
// host-wide: another runtime's stale record must not delete a live slot),
// and a slot whose destroy stopped after its veth still loses its
// namespace.
func TestSlotDestroyLeavesReusedIndex(t *testing.T) {
	needRoot(t)
	w := newWorld(t)
	s := w.slots()
	other := Slots{Host: newHost(t), NamePrefix: testSlotPrefix}
	ctx := context.Background()
	old, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Destroy(ctx, old); err != nil {
		t.Fatal(err)
	}
	reused, err := other.CreateAt(ctx, old.Index)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := other.Destroy(context.Background(), reused); err != nil {
			t.Error(err)
		}
	})
	if reused.NetNS != old.NetNS {
		t.Fatalf("slot %+v does not reuse %+v's namespace name", reused, old)
	}
	if err := s.Destroy(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := netdev.ResolveNetNS(reused.NetNS); err != nil {
		t.Errorf("the new slot's namespace after a stale Destroy: %v", err)
	}
	if _, err := nlIn(t, other.Host.NetNS).LinkByName(reused.HostVeth); err != nil {
		t.Errorf("the new slot's veth after a stale Destroy: %v", err)
	}

	half, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := nlIn(t, w.host.NetNS)
	l, err := h.LinkByName(half.HostVeth)
	if err == nil {
		err = h.LinkDel(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Destroy(ctx, half); err != nil {
		t.Fatal(err)
	}
	if _, err := netdev.ResolveNetNS(half.NetNS); !errors.Is(err, netdev.ErrNotFound) {
		t.Errorf("a slot without its veth: namespace after Destroy: %v", err)
	}
}
