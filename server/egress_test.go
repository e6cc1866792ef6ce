package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// requireNet skips a test that needs network namespaces and taps.
func requireNet(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces, veths and nf_tables rules")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: needs /dev/net/tun for the sandbox's tap: %v", err)
	}
}

// randID is n random bytes in hex: names that other tests running on the
// same host at the same time do not take.
func randID(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hostNS makes a network namespace of the test's own to play the host of
// the sandboxes' slots, and checks at the end that they left nothing in
// it. It returns its name and path.
func hostNS(t *testing.T) (string, string) {
	t.Helper()
	name := "kdsrv-host-" + randID(t, 3)
	path, err := netdev.CreateNetNS(name)
	must(t, err)
	t.Cleanup(func() {
		inv, err := network.Leaks(context.Background(), network.LeakOptions{Host: network.Host{NetNS: path}})
		if err != nil {
			t.Errorf("inventory of %s: %v", name, err)
		} else if len(inv.Links) > 0 || len(inv.Tables) > 0 {
			t.Errorf("the host namespace still holds links %v, tables %v", inv.Links, inv.Tables)
		}
		if err := netdev.DeleteNetNS(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name, path
}

// allowed4 reads the IPv4 addresses and networks the egress table in the
// namespace at nsPath lets through, as the kernel holds them (the set
// allow4, whose elements are interval starts and ends).
func allowed4(t *testing.T, nsPath string) []string {
	t.Helper()
	inv, err := network.Leaks(context.Background(), network.LeakOptions{Host: network.Host{NetNS: nsPath}})
	must(t, err)
	var tables []string
	for _, tb := range inv.Tables {
		if name, ok := strings.CutPrefix(tb, "inet "); ok {
			tables = append(tables, name)
		}
	}
	if len(tables) != 1 {
		t.Fatalf("want one inet table (the sandbox's egress table) in the host namespace, found %v", inv.Tables)
	}
	f, err := os.Open(nsPath)
	must(t, err)
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	must(t, err)
	set, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: tables[0]}, "allow4")
	must(t, err)
	elems, err := c.GetSetElements(set)
	must(t, err)
	var out []string
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok && !e.IntervalEnd && !a.IsUnspecified() {
			out = append(out, a.String())
		}
	}
	slices.Sort(out)
	return out
}

// The egress policy of a slot sandbox through kindlingd: the server shows
// it in the sandbox's description, changes it in the kernel at once, and
// refuses bad changes and sandboxes without a slot or CNI network.
func TestNativeEgress(t *testing.T) { testNativeEgress(t, false) }

// The same with the real Firecracker of $KINDLING_FIRECRACKER running the
// test guest on the slot's tap.
func TestNativeEgressReal(t *testing.T) { testNativeEgress(t, true) }

func testNativeEgress(t *testing.T, real bool) {
	requireNet(t)
	if real {
		cfgFirecracker = testutil.Firecracker(t)
	}
	nsName, nsPath := hostNS(t)
	r := newRig(t, server.Config{})
	ctx := context.Background()
	c := r.client
	id := "kdsrv-" + randID(t, 4)
	_, err := c.Create(ctx, sandbox.Spec{ID: id, Kernel: haltGuest(t, "egress"), Firecracker: r.fc, NetNS: nsName,
		Net: []sandbox.Net{{Slot: true}}, Egress: "deny", AllowEgress: []string{"10.215.0.0/30"}}, sandbox.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		if err := r.rt.Remove(context.Background(), id, true); err != nil {
			t.Errorf("remove %s: %v", id, err)
		}
	})
	in, err := c.Start(ctx, id)
	must(t, err)
	if !in.Spec.NetSlot || in.Spec.Egress != "deny" || !slices.Equal(in.Spec.AllowEgress, []string{"10.215.0.0/30"}) {
		t.Fatalf("the spec came back as net_slot %v, egress %q, allow %v", in.Spec.NetSlot, in.Spec.Egress, in.Spec.AllowEgress)
	}
	n := in.Network
	if n == nil || n.Kind != "slot" || n.HostAddress == "" || len(n.Interfaces) != 1 || n.Interfaces[0].Address == "" {
		t.Fatalf("Info.Network through the server = %+v, want a slot with its addresses", n)
	}
	if n.Egress == nil || n.Egress.Default != "deny" || len(n.Egress.CIDRs) != 1 || n.Egress.CIDRs[0].String() != "10.215.0.0/30" {
		t.Fatalf("Info.Network.Egress through the server = %+v", n.Egress)
	}
	if got := allowed4(t, nsPath); !slices.Equal(got, []string{"10.215.0.0"}) {
		t.Fatalf("allowed in the kernel at start: %v", got)
	}

	t.Run("allow", func(t *testing.T) {
		in, err := c.SetEgress(ctx, id, sandbox.EgressChange{Allow: []string{"10.217.0.2", "allowed.test"}})
		must(t, err)
		if !slices.Equal(in.Spec.AllowEgress, []string{"10.215.0.0/30", "10.217.0.2", "allowed.test"}) {
			t.Errorf("spec rules after allow: %v", in.Spec.AllowEgress)
		}
		if e := in.Network.Egress; e == nil || len(e.CIDRs) != 2 || !slices.Equal(e.Domains, []string{"allowed.test"}) {
			t.Errorf("policy after allow: %+v", e)
		}
		if got := allowed4(t, nsPath); !slices.Equal(got, []string{"10.215.0.0", "10.217.0.2"}) {
			t.Errorf("allowed in the kernel after allow: %v", got)
		}
		// The server's runtime recorded it: what a restart starts from.
		local, err := r.rt.Inspect(ctx, id)
		must(t, err)
		if !slices.Equal(local.Spec.AllowEgress, in.Spec.AllowEgress) {
			t.Errorf("the server's record: %v", local.Spec.AllowEgress)
		}
	})
	t.Run("revoke and default", func(t *testing.T) {
		in, err := c.SetEgress(ctx, id, sandbox.EgressChange{Revoke: []string{"10.215.0.0/30"}, Default: "allow"})
		must(t, err)
		if in.Spec.Egress != "allow" || in.Network.Egress.Default != "allow" {
			t.Errorf("default after the change: spec %q, in force %+v", in.Spec.Egress, in.Network.Egress)
		}
		if got := allowed4(t, nsPath); !slices.Equal(got, []string{"10.217.0.2"}) {
			t.Errorf("allowed in the kernel after revoke: %v", got)
		}
	})
	t.Run("clear", func(t *testing.T) {
		in, err := c.SetEgress(ctx, id, sandbox.EgressChange{Clear: true, Default: "deny"})
		must(t, err)
		if len(in.Spec.AllowEgress) != 0 || in.Network.Egress.Default != "deny" || len(in.Network.Egress.CIDRs) != 0 {
			t.Errorf("after clear: spec %v, in force %+v", in.Spec.AllowEgress, in.Network.Egress)
		}
		if got := allowed4(t, nsPath); len(got) != 0 {
			t.Errorf("allowed in the kernel after clear: %v", got)
		}
	})
	t.Run("a bad rule changes nothing", func(t *testing.T) {
		_, err := c.SetEgress(ctx, id, sandbox.EgressChange{Allow: []string{"10.1.0.0/8", "10.0.0.0/99"}})
		if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), `"10.0.0.0/99"`) {
			t.Errorf("a bad rule: %v, want invalid naming the rule", err)
		}
		if got := allowed4(t, nsPath); len(got) != 0 {
			t.Errorf("allowed in the kernel after a bad change: %v", got)
		}
	})
	t.Run("nothing to change", func(t *testing.T) {
		if _, err := c.SetEgress(ctx, id, sandbox.EgressChange{}); !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "nothing to change") {
			t.Errorf("an empty change: %v", err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, err := c.SetEgress(ctx, "nosuch", sandbox.EgressChange{Default: "deny"}); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("a missing sandbox: %v", err)
		}
	})
}

// A sandbox without a slot or CNI network has no egress policy to change:
// the server says so, and needs no root to.
func TestNativeEgressNoNetwork(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	_, err := r.client.Create(ctx, r.idleSpec("plain"), sandbox.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { must(t, r.rt.Remove(context.Background(), "plain", true)) })
	_, err = r.client.SetEgress(ctx, "plain", sandbox.EgressChange{Allow: []string{"10.0.0.0/8"}})
	if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "--net slot") {
		t.Fatalf("egress of a sandbox without a network: %v", err)
	}
	in, err := r.client.Inspect(ctx, "plain")
	must(t, err)
	if in.Spec.Egress != "" || len(in.Spec.AllowEgress) != 0 || in.Network != nil {
		t.Errorf("the refused change left egress %q, rules %v, network %+v", in.Spec.Egress, in.Spec.AllowEgress, in.Network)
	}
}

// A restore through the server takes RestoreOptions.Ports: a clone of a
// slot sandbox publishes the ports it is given, none with an empty list,
// and keeps the snapshot's (then held by the source) without one.
func TestNativeRestorePorts(t *testing.T) { testNativeRestorePorts(t, false) }

// The same with the real Firecracker of $KINDLING_FIRECRACKER.
func TestNativeRestorePortsReal(t *testing.T) { testNativeRestorePorts(t, true) }

func testNativeRestorePorts(t *testing.T, real bool) {
	requireNet(t)
	if real {
		cfgFirecracker = testutil.Firecracker(t)
	}
	nsName, _ := hostNS(t)
	r := newRig(t, server.Config{})
	ctx := context.Background()
	c := r.client
	id := "kdsrv-" + randID(t, 4)
	var ids []string
	t.Cleanup(func() {
		for _, id := range ids {
			if err := r.rt.Remove(context.Background(), id, true); err != nil {
				t.Errorf("remove %s: %v", id, err)
			}
		}
	})
	ids = append(ids, id)
	_, err := c.Create(ctx, sandbox.Spec{ID: id, Kernel: haltGuest(t, "ports"), Firecracker: r.fc, NetNS: nsName,
		Net: []sandbox.Net{{Slot: true}}, Ports: []string{"18191:80"}}, sandbox.CreateOptions{})
	must(t, err)
	in, err := c.Start(ctx, id)
	must(t, err)
	if in.Network == nil || !slices.Equal(in.Network.Ports, []string{"18191:80/tcp"}) {
		t.Fatalf("the source's network: %+v", in.Network)
	}
	snap := t.TempDir() + "/snap"
	_, err = c.Snapshot(ctx, id, snap, sandbox.SnapshotOptions{})
	must(t, err)

	tests := []struct {
		name  string
		ports []string
		want  []string
		err   error
	}{
		{"replaced", []string{"18192:80", "18193:53/udp"}, []string{"18192:80/tcp", "18193:53/udp"}, nil},
		{"none", []string{}, nil, nil},
		{"kept, held by the source", nil, nil, sandbox.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cid := "kdsrv-" + randID(t, 4)
			in, err := c.Restore(ctx, snap, sandbox.RestoreOptions{ID: cid, Ports: tt.ports})
			if err == nil {
				ids = append(ids, cid)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), "18191") {
					t.Fatalf("restore: %v, want an error matching %v naming the port", err, tt.err)
				}
				return
			}
			must(t, err)
			if in.Network == nil || !slices.Equal(in.Network.Ports, tt.want) || !slices.Equal(in.Spec.Ports, tt.want) {
				t.Fatalf("the clone's ports: network %+v, spec %v; want %v", in.Network, in.Spec.Ports, tt.want)
			}
		})
	}
}

// A published port through kindlingd's native API: the create carries
// -p, and the server's runtime publishes it on the server's host (here a
// namespace of the test's own) at start and takes it down at stop.
func TestNativePublishedPort(t *testing.T) {
	requireNet(t)
	nsName, nsPath := hostNS(t)
	r := newRig(t, server.Config{})
	ctx := context.Background()
	id := "kdsrv-" + randID(t, 4)
	_, err := r.client.Create(ctx, sandbox.Spec{ID: id, Kernel: haltGuest(t, "ports"), Firecracker: r.fc, NetNS: nsName,
		Net: []sandbox.Net{{Slot: true}}, Ports: []string{"18096:80"}}, sandbox.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		if err := r.rt.Remove(context.Background(), id, true); err != nil {
			t.Errorf("remove %s: %v", id, err)
		}
	})
	in, err := r.client.Start(ctx, id)
	must(t, err)
	if in.Network == nil || !slices.Equal(in.Network.Ports, []string{"18096:80/tcp"}) {
		t.Fatalf("Info.Network through the server = %+v, want port 18096:80/tcp published", in.Network)
	}
	inv, err := network.Leaks(ctx, network.LeakOptions{Host: network.Host{NetNS: nsPath}})
	must(t, err)
	if len(inv.Tables) != 1 || !strings.HasPrefix(inv.Tables[0], "ip kindling_p_") {
		t.Errorf("the server's host holds tables %v, want the sandbox's port table", inv.Tables)
	}
	must(t, r.client.Stop(ctx, id))
	inv, err = network.Leaks(ctx, network.LeakOptions{Host: network.Host{NetNS: nsPath}})
	must(t, err)
	if len(inv.Tables) != 0 {
		t.Errorf("after stop the server's host holds tables %v", inv.Tables)
	}
}
