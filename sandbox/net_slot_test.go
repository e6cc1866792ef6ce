package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/network"
)

// slotEnv is a test's stand-in host for slots: a namespace of its own
// with loopback up; the slots hang off it.
type slotEnv struct {
	hostNS, hostPth string
}

func newSlotEnv(t *testing.T) *slotEnv {
	t.Helper()
	requireNet(t)
	e := &slotEnv{hostNS: "kdsbx-shost-" + hexID(t, 3)}
	path, err := netdev.CreateNetNS(e.hostNS)
	if err != nil {
		t.Fatal(err)
	}
	e.hostPth = path
	t.Cleanup(func() {
		e.hostEmpty(t)
		if err := netdev.DeleteNetNS(e.hostNS); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	h := nsHandle(t, path)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// slotGone checks that the slot's namespace is gone.
func (e *slotEnv) slotGone(t *testing.T, in *NetworkInfo, when string) {
	t.Helper()
	if in == nil {
		return
	}
	if _, err := os.Stat(in.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: slot namespace %s still there (%v)", when, in.NetNS, err)
	}
}

// hostEmpty checks that the host namespace holds no slot veth and no
// kindling table.
func (e *slotEnv) hostEmpty(t *testing.T) {
	t.Helper()
	inv, err := network.Leaks(context.Background(), network.LeakOptions{Host: network.Host{NetNS: e.hostPth}})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Links) > 0 || len(inv.Tables) > 0 {
		t.Errorf("the host namespace still holds links %v, tables %v", inv.Links, inv.Tables)
	}
}

// startSlotSandbox creates and starts an agent sandbox on a slot of e.
func (e *slotEnv) startSlotSandbox(t *testing.T, r *Runtime, fc, img string, edit func(*Spec)) Info {
	t.Helper()
	ctx := context.Background()
	id := "kdslt-" + hexID(t, 4)
	s := Spec{ID: id, Kernel: agentKernel(t), KernelArgs: testutil.AgentBootArgs, Firecracker: fc,
		Rootfs: &Disk{Path: img}, MemoryMiB: 64, NetNS: e.hostNS, Net: []Net{{Slot: true}}}
	if edit != nil {
		edit(&s)
	}
	if _, err := r.Create(ctx, s, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkSimLeftovers(t, id, img) })
	var in Info
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), id, true); err != nil {
			t.Errorf("remove %s: %v", id, err)
		}
		e.slotGone(t, in.Network, "after rm of "+id)
	})
	in, err := r.Start(ctx, id)
	if k := os.Getenv(EnvKernel); errors.Is(err, ErrUnavailable) && k != "" && s.Kernel == k {
		t.Skipf("skipping: the guest booted from %s never answered (this machine does not boot that kernel?): %v", s.Kernel, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if in.Network == nil || in.Network.Kind != "slot" || len(in.Network.Interfaces) != 1 {
		t.Fatalf("Info.Network = %+v, want a slot", in.Network)
	}
	return in
}

// checkGuestSlotAddress checks that the guest's eth0 is the slot's fixed
// guest side.
func checkGuestSlotAddress(t *testing.T, r *Runtime, id string) {
	t.Helper()
	code, out, _ := run(t, r, id, ExecRequest{Args: []string{"sh", "-c", "busybox ip -4 addr show eth0; busybox ip link show eth0; busybox ip route"}})
	if code != 0 || !strings.Contains(out, network.SlotGuestAddr.String()) || !strings.Contains(out, network.SlotGuestMAC) ||
		!strings.Contains(out, "default via "+network.SlotGateway.Addr().String()) {
		t.Fatalf("guest %s's eth0 (exit %d):\n%s\nwant %s, %s, default via %s", id, code, out,
			network.SlotGuestAddr, network.SlotGuestMAC, network.SlotGateway.Addr())
	}
}

// A sandbox on a slot reaches a server and is reached at its slot address
// and its published port; a clone of it, restored from its snapshot while
// it still runs, does the same from a slot of its own with nothing changed
// inside the guest.
func TestNetGuestSlotAndClone(t *testing.T) {
	testutil.NeedSimulatedGuest(t)
	// Clones need a vsock socket of their own: a release with vsock
	// overrides on restore (v1.16).
	t.Setenv("FAKEFC", `{"version":"1.16.0"}`)
	t.Setenv(EnvPassEnv, "FAKEFC")
	e := newSlotEnv(t)
	srv := newServerNS(t, e.hostPth, "10.215.0.1", "10.215.0.2", "hello from the server\n")
	r, fc := newRuntime(t, false)
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{})
	src := e.startSlotSandbox(t, r, fc, img, func(s *Spec) { s.Ports = []string{"18092:8080"} })
	checkGuestSlotAddress(t, r, src.ID)
	if code, out := guestFetch(t, r, src.ID, srv); code != 0 || out != "hello from the server\n" {
		t.Fatalf("source: guest nc %s: exit %d, %q", srv, code, out)
	}
	serveOnce := func(id, msg string) {
		t.Helper()
		p, err := r.Exec(context.Background(), id, ExecRequest{Args: []string{"sh", "-c", "echo " + msg + " | busybox nc -l -p 8080"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
	}
	reach := func(addr, want string) {
		t.Helper()
		// The guest's nc may not listen yet: retry until it answers.
		var got string
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if got, err = dialIn(e.hostPth, addr, 2*time.Second); err == nil && got != "" || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || got != want+"\n" {
			t.Fatalf("host to %s: %q, %v; want %q", addr, got, err, want)
		}
	}
	// The host reaches the source at its slot address, and at the
	// published port on loopback.
	serveOnce(src.ID, "src-direct")
	reach(net.JoinHostPort(src.Network.HostAddress, "8080"), "src-direct")
	serveOnce(src.ID, "src-published")
	reach("127.0.0.1:18092", "src-published")

	snap := filepath.Join(t.TempDir(), "snap")
	ctx := context.Background()
	if _, err := r.Snapshot(ctx, src.ID, snap, SnapshotOptions{Own: true}); err != nil {
		t.Fatal(err)
	}
	cloneID := "kdslt-" + hexID(t, 4)
	t.Cleanup(func() { checkSimLeftovers(t, cloneID, filepath.Join(r.Root(), cloneID)) })
	// The source's host port stays the source's: the clone publishes none.
	clone, err := r.Restore(ctx, snap, RestoreOptions{ID: cloneID, CopyOwnedDrives: true, Firecracker: fc, Ports: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	var cloneNet *NetworkInfo
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), cloneID, true); err != nil {
			t.Errorf("remove clone: %v", err)
		}
		e.slotGone(t, cloneNet, "after rm of the clone")
	})
	cloneNet = clone.Network
	if cloneNet == nil || cloneNet.Kind != "slot" || cloneNet.HostAddress == src.Network.HostAddress || cloneNet.NetNS == src.Network.NetNS {
		t.Fatalf("clone's network %+v, source's %+v: want a slot of its own", cloneNet, src.Network)
	}
	// The same guest side, its own host side; both run at once.
	checkGuestSlotAddress(t, r, cloneID)
	for _, id := range []string{cloneID, src.ID} {
		if code, out := guestFetch(t, r, id, srv); code != 0 || out != "hello from the server\n" {
			t.Fatalf("%s: guest nc %s: exit %d, %q", id, srv, code, out)
		}
	}
	serveOnce(cloneID, "clone-direct")
	reach(net.JoinHostPort(cloneNet.HostAddress, "8080"), "clone-direct")
	serveOnce(src.ID, "src-again")
	reach(net.JoinHostPort(src.Network.HostAddress, "8080"), "src-again")
}

// testResolver is a tiny DNS server answering A records from names.
func testResolver(t *testing.T, nsPath, addr string, names map[string]string) {
	t.Helper()
	var pc net.PacketConn
	if err := netdev.Do(nsPath, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if a, ok := names[strings.ToLower(q.Name.String())]; ok && q.Type == dnsmessage.TypeA {
				ip := net.ParseIP(a).To4()
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 300},
					dnsmessage.AResource{A: [4]byte(ip)})
			}
			out, err := b.Finish()
			if err == nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// An egress policy on a slot sandbox: denied destinations are blocked,
// a CIDR rule and a domain rule (through the slot's DNS forwarder) let
// through, and a change while it runs takes effect at once.
func TestNetGuestEgress(t *testing.T) {
	testutil.NeedSimulatedGuest(t)
	r, fc := newRuntime(t, false)
	testNetEgress(t, r, fc, nil)
}

// TestNetGuestEgressRealVM is TestNetGuestEgress on a real Firecracker
// booting a real Linux kernel (virtio-net, ip= autoconfiguration). It
// needs KINDLING_FIRECRACKER, KINDLING_KERNEL, /dev/kvm and a machine
// that boots that kernel; elsewhere it skips and says which is missing.
func TestNetGuestEgressRealVM(t *testing.T) {
	fc := testutil.Firecracker(t)
	kernel := os.Getenv(EnvKernel)
	if kernel == "" {
		t.Skipf("skipping real-VM network test: set %s to a Linux guest kernel with virtio-net and IP autoconfiguration (no Linux guest boots on the machines kindling is developed on)", EnvKernel)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("skipping real-VM network test: no /dev/kvm: %v", err)
	}
	requireNet(t)
	testutil.CheckLeaks(t)
	r, err := Open(testutil.ShortTempDir(t), WithAgentTimeout(realAgentTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertRootEmpty(t, r) })
	testNetEgress(t, r, fc, func(s *Spec) { s.Kernel, s.MemoryMiB = kernel, 256 })
}

// testNetEgress runs the egress scenarios on runtime r; real, when set,
// makes the sandbox a real VM.
func testNetEgress(t *testing.T, r *Runtime, fc string, real func(*Spec)) {
	e := newSlotEnv(t)
	byCIDR := newServerNS(t, e.hostPth, "10.215.0.1", "10.215.0.2", "cidr\n")
	byName := newServerNS(t, e.hostPth, "10.216.0.1", "10.216.0.2", "name\n")
	denied := newServerNS(t, e.hostPth, "10.217.0.1", "10.217.0.2", "denied\n")
	testResolver(t, e.hostPth, "127.0.0.1:5399", map[string]string{"allowed.test.": "10.216.0.2", "other.test.": "10.217.0.2"})
	t.Setenv(EnvDNSUpstream, "127.0.0.1:5399")
	t.Setenv(EnvPassEnv, EnvDNSUpstream)
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{})
	in := e.startSlotSandbox(t, r, fc, img, func(s *Spec) {
		if real != nil {
			real(s)
		}
		s.Egress, s.AllowEgress = "deny", []string{"10.215.0.0/30", "allowed.test"}
	})
	if eg := in.Network.Egress; eg == nil || eg.Default != "deny" || len(eg.CIDRs) != 1 || len(eg.Domains) != 1 {
		t.Fatalf("Info.Network.Egress = %+v", eg)
	}
	mustReach := func(addr, want string) {
		t.Helper()
		if code, out := guestFetch(t, r, in.ID, addr); code != 0 || out != want {
			t.Fatalf("guest nc %s: exit %d, %q; want %q", addr, code, out, want)
		}
	}
	mustNotReach := func(addr string) {
		t.Helper()
		code, out := guestFetch(t, r, in.ID, addr)
		if code == 0 || strings.Contains(out, "cidr\n") || strings.Contains(out, "name\n") || strings.Contains(out, "denied\n") {
			t.Fatalf("guest nc %s: exit %d, %q; want it blocked", addr, code, out)
		}
	}
	resolve := func(name string) string {
		t.Helper()
		code, out, errOut := run(t, r, in.ID, ExecRequest{Args: []string{"busybox", "nslookup", name, network.SlotGateway.Addr().String()}})
		if code != 0 {
			t.Fatalf("nslookup %s: exit %d\n%s%s", name, code, out, errOut)
		}
		return out
	}
	t.Run("denied", func(t *testing.T) { mustNotReach(denied) })
	t.Run("allowed by CIDR", func(t *testing.T) { mustReach(byCIDR, "cidr\n") })
	t.Run("allowed by domain", func(t *testing.T) {
		// Not before the guest has resolved the name.
		mustNotReach(byName)
		if out := resolve("allowed.test"); !strings.Contains(out, "10.216.0.2") {
			t.Fatalf("nslookup allowed.test: %s", out)
		}
		mustReach(byName, "name\n")
	})
	t.Run("resolving another name opens nothing", func(t *testing.T) {
		if out := resolve("other.test"); !strings.Contains(out, "10.217.0.2") {
			t.Fatalf("nslookup other.test: %s", out)
		}
		mustNotReach(denied)
	})
	t.Run("changed while it runs", func(t *testing.T) {
		ctx := context.Background()
		got, err := r.SetEgress(ctx, in.ID, EgressChange{Allow: []string{"10.217.0.2"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Network.Egress.CIDRs) != 2 || len(got.Spec.AllowEgress) != 3 {
			t.Errorf("after allowing: policy %+v, spec rules %v", got.Network.Egress, got.Spec.AllowEgress)
		}
		mustReach(denied, "denied\n")
		if _, err := r.SetEgress(ctx, in.ID, EgressChange{Revoke: []string{"10.217.0.2", "10.215.0.0/30"}}); err != nil {
			t.Fatal(err)
		}
		mustNotReach(denied)
		mustNotReach(byCIDR)
		// The domain rule stays, with what it learned.
		mustReach(byName, "name\n")
		if _, err := r.SetEgress(ctx, in.ID, EgressChange{Default: "allow"}); err != nil {
			t.Fatal(err)
		}
		mustReach(denied, "denied\n")
		_, err = r.SetEgress(ctx, in.ID, EgressChange{Allow: []string{"10.0.0.0/99"}})
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), `"10.0.0.0/99"`) {
			t.Errorf("a bad rule: %v", err)
		}
		mustReach(denied, "denied\n")
	})
}

// Two sandboxes asking for one host port: the second start is one line
// naming the first, and leaves nothing of the second behind.
func TestNetSlotPortConflict(t *testing.T) {
	e := newSlotEnv(t)
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	ids := []string{"kdslt-" + hexID(t, 4), "kdslt-" + hexID(t, 4)}
	for _, id := range ids {
		if _, err := r.Create(ctx, Spec{ID: id, Kernel: haltGuest(t, "port"), Firecracker: fc, NetNS: e.hostNS,
			Net: []Net{{Slot: true}}, Ports: []string{"18094:80"}}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Remove(context.Background(), id, true); err != nil {
				t.Errorf("remove %s: %v", id, err)
			}
		})
	}
	in, err := r.Start(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Start(ctx, ids[1])
	want := `host port 18094/tcp is already published by sandbox "` + ids[0] + `"`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("second start: %v, want one line containing %s", err, want)
	}
	second, err := r.Inspect(ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if second.Status != Created || second.Network != nil {
		t.Errorf("after the refused start: status %s, network %+v", second.Status, second.Network)
	}
	inv, err := network.Leaks(ctx, network.LeakOptions{Host: network.Host{NetNS: e.hostPth}})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Links) != 1 || len(inv.Tables) != 1 {
		t.Errorf("with one sandbox started the host holds links %v, tables %v; want one of each", inv.Links, inv.Tables)
	}
	if err := r.Stop(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	e.slotGone(t, in.Network, "after stop")
}

// A runtime given a slot pool starts --net slot sandboxes on the pool's
// slots; one whose host namespace is another builds its own.
func TestNetSlotFromPool(t *testing.T) {
	e := newSlotEnv(t)
	other := newSlotEnv(t)
	ctx := context.Background()
	pool, err := network.NewPool(network.Slots{Host: network.Host{NetNS: e.hostPth}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pool.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	r, fc := newRuntime(t, false)
	WithSlotPool(pool)(r)
	start := func(hostNS string) Info {
		t.Helper()
		id := "kdslt-" + hexID(t, 4)
		if _, err := r.Create(ctx, Spec{ID: id, Kernel: haltGuest(t, "pool"), Firecracker: fc, NetNS: hostNS,
			Net: []Net{{Slot: true}}}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Remove(context.Background(), id, true); err != nil {
				t.Errorf("remove %s: %v", id, err)
			}
		})
		in, err := r.Start(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	// Slots.Create makes a new namespace; a claim hands out one made
	// before the start.
	before := map[string]bool{}
	ents, _ := os.ReadDir(netdev.NetNSDir)
	for _, e := range ents {
		before[filepath.Join(netdev.NetNSDir, e.Name())] = true
	}
	in := start(e.hostNS)
	if in.Network == nil || in.Network.Kind != "slot" {
		t.Fatalf("network %+v", in.Network)
	}
	if !before[in.Network.NetNS] {
		t.Errorf("the sandbox's slot %s was made at its start, not claimed from the pool", in.Network.NetNS)
	}
	in2 := start(other.hostNS)
	if in2.Network == nil || in2.Network.NetNS == in.Network.NetNS {
		t.Fatalf("a sandbox of another host namespace: network %+v", in2.Network)
	}
}

// A slot sandbox whose monitor died is cleaned up by gc: its slot, port
// and egress tables go.
func TestNetSlotGCAfterMonitorDied(t *testing.T) {
	e := newSlotEnv(t)
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	id := "kdslt-" + hexID(t, 4)
	if _, err := r.Create(ctx, Spec{ID: id, Kernel: haltGuest(t, "gc"), Firecracker: fc, NetNS: e.hostNS,
		Net: []Net{{Slot: true}}, Ports: []string{"18099:80"}, AllowEgress: []string{"10.9.0.0/16"}}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := r.Start(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := network.Leaks(ctx, network.LeakOptions{Host: network.Host{NetNS: e.hostPth}})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Links) != 1 || len(inv.Tables) != 2 {
		t.Fatalf("running: host holds links %v, tables %v; want the slot's veth, a port and an egress table", inv.Links, inv.Tables)
	}
	if err := syscall.Kill(in.MonitorPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExited(t, in.MonitorPID)
	rep, err := r.Collect(ctx, GCOptions{KillOrphans: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0] != id {
		t.Errorf("gc removed %v, want [%s]", rep.Removed, id)
	}
	e.slotGone(t, in.Network, "after gc")
	e.hostEmpty(t)
}

// A jailed sandbox (its Firecracker runs as the sandbox's uid) starts on a
// slot, fresh or from the pool, in the slot's namespace, and the slot's tap
// is that uid's. (The simulated guest cannot make its eth0 in a jail, which
// has no /proc: the guest here is one that halts, and that the uid may
// attach to its tap is the kernel's rule, tested in internal/netdev.)
func TestNetSlotJailed(t *testing.T) {
	asRootWithJailerDefault(t)
	requireNet(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	ctx := context.Background()
	for _, pooled := range []bool{false, true} {
		t.Run(map[bool]string{false: "fresh slot", true: "pooled slot"}[pooled], func(t *testing.T) {
			e := newSlotEnv(t)
			r, fc := newRuntime(t, false)
			before := map[string]bool{}
			if pooled {
				pool, err := network.NewPool(network.Slots{Host: network.Host{NetNS: e.hostPth}}, 1)
				if err != nil {
					t.Fatal(err)
				}
				if err := pool.Fill(ctx); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := pool.Close(context.Background()); err != nil {
						t.Error(err)
					}
				})
				WithSlotPool(pool)(r)
				ents, _ := os.ReadDir(netdev.NetNSDir)
				for _, e := range ents {
					before[filepath.Join(netdev.NetNSDir, e.Name())] = true
				}
			}
			id := "kdslt-" + hexID(t, 4)
			if _, err := r.Create(ctx, Spec{ID: id, Kernel: haltGuest(t, "jailed slot"), Firecracker: fc, NetNS: e.hostNS,
				Net: []Net{{Slot: true}}}, CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			var in Info
			t.Cleanup(func() {
				if err := r.Remove(context.Background(), id, true); err != nil {
					t.Errorf("remove %s: %v", id, err)
				}
				e.slotGone(t, in.Network, "after rm")
			})
			in, err := r.Start(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if in.Spec.Jailer == "" || in.JailUID == 0 || in.Network == nil || in.Network.Kind != "slot" {
				t.Fatalf("jailer %q, uid %d, network %+v: want a jailed sandbox on a slot", in.Spec.Jailer, in.JailUID, in.Network)
			}
			if pooled != before[in.Network.NetNS] {
				t.Errorf("slot %s: made before the start %v, want %v", in.Network.NetNS, before[in.Network.NetNS], pooled)
			}
			link, err := nsHandle(t, in.Network.NetNS).LinkByName(network.SlotTap)
			if err != nil {
				t.Fatal(err)
			}
			if tun, ok := link.(*netlink.Tuntap); !ok || tun.Owner != uint32(in.JailUID) {
				t.Errorf("the slot's tap %+v is not the jail uid %d's", link, in.JailUID)
			}
			vmmNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", in.PID))
			if err != nil || vmmNS != "net:["+strconv.FormatUint(inode(t, in.Network.NetNS), 10)+"]" {
				t.Errorf("the VMM's namespace %q (%v), want the slot's %s", vmmNS, err, in.Network.NetNS)
			}
			checkVMMJailed(t, in)
		})
	}
}

// The host's default egress policy (KINDLING_EGRESS) applies to a slot
// sandbox whose spec says none: recorded at create, so it holds whatever
// the variable says at start, and in force once started. A spec's own
// setting wins, and a sandbox without a network is not touched by it.
func TestNetSlotHostEgressDefault(t *testing.T) {
	e := newSlotEnv(t)
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	create := func(edit func(*Spec)) string {
		t.Helper()
		id := "kdslt-" + hexID(t, 4)
		s := Spec{ID: id, Kernel: haltGuest(t, "host egress"), Firecracker: fc, NetNS: e.hostNS, Net: []Net{{Slot: true}}}
		if edit != nil {
			edit(&s)
		}
		if _, err := r.Create(ctx, s, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Remove(context.Background(), id, true); err != nil {
				t.Errorf("remove %s: %v", id, err)
			}
		})
		return id
	}
	t.Setenv(EnvEgress, network.EgressDeny)
	denied := create(nil)
	allowed := create(func(s *Spec) { s.Egress = network.EgressAllow })
	plain := create(func(s *Spec) { s.Net, s.NetNS = nil, "" })
	t.Setenv(EnvEgress, "")
	for id, want := range map[string]string{denied: network.EgressDeny, allowed: network.EgressAllow, plain: ""} {
		in, err := r.Inspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Spec.Egress != want {
			t.Errorf("sandbox %s: spec egress %q after create, want %q", id, in.Spec.Egress, want)
		}
	}
	for id, want := range map[string]string{denied: network.EgressDeny, allowed: network.EgressAllow} {
		in, err := r.Start(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Network == nil || in.Network.Egress == nil || in.Network.Egress.Default != want || len(in.Network.Egress.CIDRs)+len(in.Network.Egress.Domains) != 0 {
			t.Errorf("sandbox %s started: network %+v, want egress %s with no rules", id, in.Network, want)
		}
	}
	inv, err := network.Leaks(ctx, network.LeakOptions{Host: network.Host{NetNS: e.hostPth}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(inv.Tables); n != 2 {
		t.Errorf("the host namespace holds tables %v, want the two sandboxes' egress tables", inv.Tables)
	}
	for _, id := range []string{denied, allowed} {
		if err := r.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	e.hostEmpty(t)
}
