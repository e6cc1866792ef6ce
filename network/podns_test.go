package network

import (
	"context"
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

// A namespace set up by someone else's CNI (as containerd's CRI plugin
// does for a pod): JoinNetNS reads its interface's address, gateway and
// MAC, and a guest on the tap it adds reaches a server beyond the
// interface with that address; LeaveNetNS removes the tap and the
// redirect, and a second LeaveNetNS is fine.
func TestJoinNetNS(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	peer, pod := newNS(t, "peer"), newNS(t, "pod")
	linkNS(t, peer, pod, "10.99.1.1/24", "10.99.1.2/24")
	addDefaultRoute(t, pod, "10.99.1.1")
	serve(t, peer, "10.99.1.1:8080", "hello from beyond the pod")

	if _, err := JoinNetNS(ctx, pod, "nope0", "kdtap0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("JoinNetNS of a missing interface: %v, want ErrNotFound", err)
	}
	if _, err := JoinNetNS(ctx, pod, "kdt0", "bad/tap"); !errors.Is(err, ErrInvalid) {
		t.Errorf("JoinNetNS with a bad tap name: %v, want ErrInvalid", err)
	}
	g, err := JoinNetNS(ctx, pod, "kdt0", "kdtap0")
	if err != nil {
		t.Fatal(err)
	}
	h := nlIn(t, pod)
	eth, err := h.LinkByName("kdt0")
	if err != nil {
		t.Fatal(err)
	}
	if g.Address != mustPrefix("10.99.1.2/24") || g.Gateway.String() != "10.99.1.1" || g.MAC != eth.Attrs().HardwareAddr.String() || g.MTU != eth.Attrs().MTU {
		t.Errorf("guest config %+v, want 10.99.1.2/24 via 10.99.1.1 with kdt0's MAC %s and MTU", g, eth.Attrs().HardwareAddr)
	}
	vm := startGuest(t, pod, "kdtap0", g)
	mustFetch(t, vm.ns, "10.99.1.1:8080", "hello from beyond the pod")
	vm.stop()

	if err := LeaveNetNS(ctx, pod, "kdt0", "kdtap0"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("kdtap0"); err == nil {
		t.Error("tap still there after LeaveNetNS")
	}
	qs, _ := h.QdiscList(eth)
	for _, q := range qs {
		if _, ok := q.(*netlink.Ingress); ok {
			t.Error("ingress qdisc of kdt0 still there after LeaveNetNS")
		}
	}
	if err := LeaveNetNS(ctx, pod, "kdt0", "kdtap0"); err != nil {
		t.Errorf("second LeaveNetNS: %v", err)
	}
	if err := LeaveNetNS(ctx, "/nonexistent/netns", "kdt0", "kdtap0"); err != nil {
		t.Errorf("LeaveNetNS of a gone namespace: %v", err)
	}
}
