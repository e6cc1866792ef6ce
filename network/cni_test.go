package network

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// needPlugins skips unless the CNI plugins the tests use are installed.
func needPlugins(t testing.TB) {
	t.Helper()
	for _, p := range []string{"bridge", "host-local", "tuning"} {
		found := false
		for _, d := range DefaultCNIBinDirs {
			if _, err := os.Stat(filepath.Join(d, p)); err == nil {
				found = true
			}
		}
		if !found {
			t.Skipf("needs the CNI plugin %s in %s (Debian: containernetworking-plugins)", p, strings.Join(DefaultCNIBinDirs, ":"))
		}
	}
}

// testNetwork writes a conflist for a bridge network on a test subnet
// 10.213.N.0/24 (inside the test host namespace) with extra plugins
// appended, and removes its lease directory at cleanup.
func testNetwork(t testing.TB, dir string, extra ...string) (name, subnet string) {
	return testNetworkVersion(t, dir, "1.0.0", extra...)
}

func testNetworkVersion(t testing.TB, dir, cniVersion string, extra ...string) (name, subnet string) {
	t.Helper()
	hex := randHex(t, 3)
	name = testPrefix + "-net-" + hex
	var b [1]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	subnet = fmt.Sprintf("10.213.%d", int(b[0])%200+10)
	plugins := []string{fmt.Sprintf(`{"type": "bridge", "bridge": "kdtbr%s", "isGateway": true,
		"ipam": {"type": "host-local", "ranges": [[{"subnet": "%s.0/24"}]]},
		"dns": {"nameservers": ["%s.1"]}}`, hex, subnet, subnet)}
	plugins = append(plugins, extra...)
	conf := fmt.Sprintf(`{"cniVersion": %q, "name": %q, "plugins": [%s]}`, cniVersion, name, strings.Join(plugins, ","))
	if err := os.WriteFile(filepath.Join(dir, name+".conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(hostLocalDataDir, name)) })
	return name, subnet
}

// leases returns the container IDs holding host-local leases on network.
func leases(t testing.TB, network string) []string {
	t.Helper()
	l, err := hostLocalLeases(network)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range l {
		ids = append(ids, x.ContainerID)
	}
	return ids
}

func TestCNIGuestReachesServer(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	host := newHost(t)
	c := CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir(), Host: host}
	network, subnet := testNetwork(t, c.ConfDir)

	// The server: another namespace on the same network, added with libcni.
	srvNS := newNS(t, "srv")
	list, err := c.Load(ctx, network)
	if err != nil {
		t.Fatal(err)
	}
	rt := &libcni.RuntimeConf{ContainerID: testPrefix + "-srv", NetNS: srvNS, IfName: "eth0"}
	res, err := c.config().AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.config().DelNetworkList(ctx, list, rt); err != nil {
			t.Errorf("DEL server: %v", err)
		}
	})
	srv, err := guestFromResult(res, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srvNS, srv.Address.Addr().String()+":8080", "hello from the server")

	id := testPrefix + "-" + randHex(t, 4)
	rec, err := c.Attach(ctx, id, []string{network})
	if err != nil {
		t.Fatal(err)
	}
	detached := false
	t.Cleanup(func() {
		if !detached {
			c.Detach(ctx, rec)
		}
	})
	if got, want := rec.NetNS, filepath.Join(netdev.NetNSDir, "kindling-"+id); got != want {
		t.Errorf("netns %s, want %s", got, want)
	}
	g := rec.Interfaces[0].Guest
	if !strings.HasPrefix(g.Address.String(), subnet+".") || g.Address.Bits() != 24 {
		t.Errorf("guest address %s, want one in %s.0/24", g.Address, subnet)
	}
	if g.Gateway.String() != subnet+".1" || len(g.DNS) != 1 || g.DNS[0].String() != subnet+".1" {
		t.Errorf("guest gateway %s, DNS %v; want %s.1 for both", g.Gateway, g.DNS, subnet)
	}
	if arg, want := g.KernelIPArg("eth0"), "ip="+g.Address.Addr().String()+"::"+subnet+".1:255.255.255.0::eth0:off:"+subnet+".1"; arg != want {
		t.Errorf("KernelIPArg = %s, want %s", arg, want)
	}
	if got := leases(t, network); len(got) != 2 {
		t.Errorf("leases held by %v, want the server and %s", got, id)
	}
	if err := c.Check(ctx, rec); err != nil {
		t.Errorf("Check: %v", err)
	}

	vm := startGuest(t, rec.NetNS, rec.Interfaces[0].Tap, g)
	mustFetch(t, vm.ns, srv.Address.Addr().String()+":8080", "hello from the server")

	// A guest that forges its source address gets nowhere: the tap only
	// lets its own address out.
	h := nlIn(t, vm.ns)
	eth, _ := h.LinkByName("eth0")
	forged, _ := netlink.ParseAddr(subnet + ".250/24")
	if err := h.AddrReplace(eth, &netlink.Addr{IPNet: forged.IPNet}); err != nil {
		t.Fatal(err)
	}
	addrs, _ := h.AddrList(eth, netlink.FAMILY_V4)
	for _, a := range addrs {
		if a.IP.String() != subnet+".250" {
			h.AddrDel(eth, &a)
		}
	}
	mustNotFetch(t, vm.ns, srv.Address.Addr().String()+":8080")
	vm.stop()

	if err := c.Detach(ctx, rec); err != nil {
		t.Fatal(err)
	}
	detached = true
	if err := c.Detach(ctx, rec); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if got := leases(t, network); len(got) != 1 || got[0] != testPrefix+"-srv" {
		t.Errorf("after Detach leases are held by %v, want only the server's", got)
	}
	if _, err := netdev.ResolveNetNS(rec.NetNS); !errors.Is(err, netdev.ErrNotFound) {
		t.Errorf("netns after Detach: %v, want gone", err)
	}
}

func TestCNIAddFailsHalfway(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	host := newHost(t)
	c := CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir(), Host: host}
	// The bridge and host-local succeed, then tuning fails on a sysctl that
	// does not exist.
	network, _ := testNetwork(t, c.ConfDir, `{"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.kindling_no_such_key": "1"}}`)
	id := testPrefix + "-" + randHex(t, 4)
	hostLinks := func() int {
		links, err := nlIn(t, host.NetNS).LinkList()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range links {
			if l.Type() == "veth" {
				n++
			}
		}
		return n
	}
	_, err := c.Attach(ctx, id, []string{network})
	if err == nil {
		t.Fatal("Attach succeeded, want the tuning plugin to fail")
	}
	t.Logf("Attach: %v", err)
	if !strings.Contains(err.Error(), network) || !strings.Contains(err.Error(), "ADD") || !strings.Contains(err.Error(), "tuning") {
		t.Errorf("error %q does not name the network and ADD", err)
	}
	if got := leases(t, network); len(got) != 0 {
		t.Errorf("leases left: %v", got)
	}
	if n := hostLinks(); n != 0 {
		t.Errorf("%d veths left in the host namespace", n)
	}
	if _, err := netdev.ResolveNetNS(CNINetNSName(id)); !errors.Is(err, netdev.ErrNotFound) {
		t.Errorf("netns left: %v", err)
	}
}

func TestCNIBadInput(t *testing.T) {
	dir := t.TempDir()
	c := CNI{ConfDir: dir, BinDirs: []string{dir}}
	if err := os.WriteFile(filepath.Join(dir, "plug.conflist"),
		[]byte(`{"cniVersion": "1.0.0", "name": "plug", "plugins": [{"type": "kindling-no-such-plugin"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id       string
		networks []string
		want     string
		is       error
	}{
		{"sb-1", []string{"nope"}, `CNI network "nope": no conflist of that name in ` + dir + `: not found`, ErrNotFound},
		{"sb-1", []string{"plug"}, `CNI network "plug": plugin "kindling-no-such-plugin" not in ` + dir + `: not found`, ErrNotFound},
		{"sb-1", nil, `CNI networks of sandbox "sb-1": none given`, ErrInvalid},
		{"sb-1", []string{"../x"}, `CNI network "../x": not a network name`, ErrInvalid},
		{"-bad", []string{"nope"}, `attach CNI: sandbox ID "-bad": must be 1 to 64 bytes of [A-Za-z0-9_.-], starting with a letter or digit`, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := c.Attach(context.Background(), tt.id, tt.networks)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Attach = %v\nwant %s", err, tt.want)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if _, err := netdev.ResolveNetNS(CNINetNSName(tt.id)); err == nil {
				t.Errorf("a namespace was made for %s", tt.id)
			}
		})
	}
}

// A CNI sandbox's traffic that the host routes (to a server behind the
// host, not on the bridge) follows its egress policy, matched by the
// address CNI gave it.
func TestCNIEgress(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	w := newWorld(t)
	c := CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir(), Host: w.host}
	network, _ := testNetwork(t, c.ConfDir)
	id := testPrefix + "-" + randHex(t, 4)
	rec, err := c.Attach(ctx, id, []string{network})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Detach(ctx, rec); err != nil {
			t.Error(err)
		}
	})
	g := rec.Interfaces[0].Guest
	vm := startGuest(t, rec.NetNS, rec.Interfaces[0].Tap, g)
	mustFetch(t, vm.ns, w.server, "hello from the server")

	src := EgressSource{Addr: g.Address.Addr()}
	p, _ := ParseEgress("deny", nil)
	eg, err := w.host.ApplyEgress(ctx, id, src, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.host.RemoveEgress(ctx, eg) })
	mustNotFetch(t, vm.ns, w.server)
	p, _ = ParseEgress("deny", []string{"10.214.0.0/24"})
	if _, err := w.host.ApplyEgress(ctx, id, src, p); err != nil {
		t.Fatal(err)
	}
	mustFetch(t, vm.ns, w.server, "hello from the server")

	// A port published to the CNI guest answers at the host's address,
	// from the host and from outside, whatever the egress policy.
	serve(t, vm.ns, "0.0.0.0:80", "cni guest")
	ports, _ := ParsePorts([]string{"8081:80"})
	pub, err := w.host.Publish(ctx, id, g.Address.Addr(), ports)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.host.Unpublish(ctx, pub) })
	mustFetch(t, w.host.NetNS, "10.214.0.1:8081", "cni guest")
	mustFetch(t, w.srvNS, "10.214.0.1:8081", "cni guest")
}

// Two networks give two interfaces and two taps in one namespace.
func TestCNITwoNetworks(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	host := newHost(t)
	c := CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir(), Host: host}
	n1, s1 := testNetwork(t, c.ConfDir)
	n2, s2 := testNetwork(t, c.ConfDir)
	if s1 == s2 {
		t.Skipf("the two test networks drew the same subnet %s", s1)
	}
	id := testPrefix + "-" + randHex(t, 4)
	rec, err := c.Attach(ctx, id, []string{n1, n2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Detach(ctx, rec); err != nil {
			t.Error(err)
		}
		if got := append(leases(t, n1), leases(t, n2)...); len(got) != 0 {
			t.Errorf("leases after Detach: %v", got)
		}
	}()
	if len(rec.Interfaces) != 2 {
		t.Fatalf("%d interfaces, want 2", len(rec.Interfaces))
	}
	for i, want := range []struct{ ifname, tap, subnet string }{{"eth0", "kdtap0", s1}, {"eth1", "kdtap1", s2}} {
		in := rec.Interfaces[i]
		if in.IfName != want.ifname || in.Tap != want.tap || !strings.HasPrefix(in.Guest.Address.String(), want.subnet+".") {
			t.Errorf("interface %d = %s/%s %s, want %s/%s in %s.0/24", i, in.IfName, in.Tap, in.Guest.Address, want.ifname, want.tap, want.subnet)
		}
		if ok, err := netdev.TapExists(in.Tap, rec.NetNS); !ok || err != nil {
			t.Errorf("tap %s: %v, %v", in.Tap, ok, err)
		}
	}
	if _, err := c.Attach(ctx, id, []string{n1}); !errors.Is(err, ErrExists) {
		t.Errorf("second Attach of the same sandbox = %v, want ErrExists", err)
	}
}

// BenchmarkCNIAttach is a sandbox's set-up on a bridge network: namespace,
// ADD and CHECK of bridge + host-local, tap and tc redirects.
func BenchmarkCNIAttach(b *testing.B) {
	needRoot(b)
	needPlugins(b)
	ctx := context.Background()
	c := CNI{ConfDir: b.TempDir(), CacheDir: b.TempDir(), Host: newHost(b)}
	network, _ := testNetwork(b, c.ConfDir)
	i := 0
	for b.Loop() {
		i++
		rec, err := c.Attach(ctx, fmt.Sprintf("%s-bench-%d", testPrefix, i), []string{network})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Detach(ctx, rec); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// Conflists older than 0.4.0 have no CHECK; they attach all the same.
func TestCNIOldConflist(t *testing.T) {
	needRoot(t)
	needPlugins(t)
	ctx := context.Background()
	c := CNI{ConfDir: t.TempDir(), CacheDir: t.TempDir(), Host: newHost(t)}
	network, subnet := testNetworkVersion(t, c.ConfDir, "0.3.1")
	rec, err := c.Attach(ctx, testPrefix+"-"+randHex(t, 4), []string{network})
	if err != nil {
		t.Fatal(err)
	}
	if g := rec.Interfaces[0].Guest; !strings.HasPrefix(g.Address.String(), subnet+".") || g.MAC == "" {
		t.Errorf("guest %+v, want an address in %s.0/24 and a MAC", g, subnet)
	}
	if err := c.Check(ctx, rec); err != nil {
		t.Errorf("Check: %v", err)
	}
	if err := c.Detach(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got := leases(t, network); len(got) != 0 {
		t.Errorf("leases after Detach: %v", got)
	}
}
