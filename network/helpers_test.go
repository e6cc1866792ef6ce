package network

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// testPrefix starts every namespace, network and sandbox ID the tests make.
const testPrefix = "kdnet"

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Geteuid() == 0 {
		if left := testLeftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "network tests left behind: %s\n", strings.Join(left, ", "))
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// testLeftovers lists test namespaces, test links in this namespace,
// test lease directories and kindling tables named after test IDs.
func testLeftovers() []string {
	var left []string
	for _, p := range []string{testPrefix, cniNetNSPrefix + testPrefix, testSlotPrefix} {
		names, _ := netdev.ListNetNS(p)
		for _, n := range names {
			left = append(left, "netns "+n)
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, testPrefix) {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(hostLocalDataDir, testPrefix+"*"))
	for _, d := range dirs {
		left = append(left, "lease dir "+d)
	}
	return left
}

// testSlotPrefix names the tests' slot namespaces, apart from real ones.
const testSlotPrefix = "kdnetslot-"

// needRoot skips the test unless it runs as root with /dev/net/tun.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces, taps and nftables tables")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newNS creates a test namespace with its loopback up and deletes it at
// cleanup. It returns the path.
func newNS(t testing.TB, what string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%s-%s", testPrefix, what, randHex(t, 3))
	path, err := netdev.CreateNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netdev.DeleteNetNS(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	h := nlIn(t, path)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up in %s: %v", path, err)
	}
	return path
}

// newHost makes a namespace that stands in for the host: forwarding on,
// and a lock dir of its own.
func newHost(t testing.TB) Host {
	t.Helper()
	ns := newNS(t, "host")
	if err := setSysctl(ns, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	return Host{NetNS: ns, LockDir: t.TempDir()}
}

func nlIn(t testing.TB, ns string) *netlink.Handle {
	t.Helper()
	h, err := netlinkIn(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// linkNS joins namespaces a and b with a veth pair, addresses aAddr and
// bAddr (prefixes) on the ends; b's end is named "kdt0".
func linkNS(t testing.TB, a, b string, aAddr, bAddr string) {
	t.Helper()
	ha, hb := nlIn(t, a), nlIn(t, b)
	name := "kdt" + randHex(t, 4)
	fdB, err := openNS(b)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fdB)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "kdtpeer", PeerNamespace: netlink.NsFd(fdB)}
	if err := ha.LinkAdd(v); err != nil {
		t.Fatalf("veth: %v", err)
	}
	for _, s := range []struct {
		h    *netlink.Handle
		name string
		addr string
	}{{ha, name, aAddr}, {hb, "kdtpeer", bAddr}} {
		l, err := s.h.LinkByName(s.name)
		if err != nil {
			t.Fatal(err)
		}
		if s.name == "kdtpeer" {
			if err := s.h.LinkSetName(l, "kdt0"); err != nil {
				t.Fatal(err)
			}
		}
		addr, _ := netlink.ParseAddr(s.addr)
		if err := s.h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// addDefaultRoute sets ns's default route via gw.
func addDefaultRoute(t testing.TB, ns, gw string) {
	t.Helper()
	h := nlIn(t, ns)
	if err := h.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("default route via %s in %s: %v", gw, ns, err)
	}
}

// guest stands in for a VM: a namespace with an interface "eth0" (a tap
// of its own) wired to the sandbox's tap by netdev.Wire, which copies
// frames as Firecracker's virtio-net copies them between the guest's NIC
// and the tap. The guest's network is set up from g, as the kernel's ip=
// argument or the agent would.
type guest struct {
	ns   string
	wire *netdev.Wire
}

func startGuest(t testing.TB, sandboxNS, tapName string, g GuestConfig) *guest {
	t.Helper()
	gs := &guest{ns: newNS(t, "guest")}
	inner, err := netdev.AttachTap("eth0", gs.ns)
	if err != nil {
		t.Fatalf("guest eth0: %v", err)
	}
	outer, err := netdev.AttachTap(tapName, sandboxNS)
	if err != nil {
		inner.Close()
		t.Fatalf("attach to the sandbox's tap: %v", err)
	}
	gs.wire = netdev.NewWire(inner, outer)
	t.Cleanup(gs.stop)
	h := nlIn(t, gs.ns)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	mac, err := net.ParseMAC(g.MAC)
	if err != nil {
		t.Fatalf("guest MAC %q: %v", g.MAC, err)
	}
	if err := h.LinkSetHardwareAddr(eth, mac); err != nil {
		t.Fatal(err)
	}
	if g.MTU > 0 {
		if err := h.LinkSetMTU(eth, g.MTU); err != nil {
			t.Fatal(err)
		}
	}
	addr, err := netlink.ParseAddr(g.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	if g.Gateway.IsValid() {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(g.Gateway.AsSlice())}); err != nil {
			t.Fatal(err)
		}
	}
	return gs
}

func (g *guest) stop() { g.wire.Close() }

// serve runs a TCP server on addr inside ns that writes greeting to each
// connection and closes it. It stops at cleanup.
func serve(t testing.TB, ns, addr, greeting string) {
	t.Helper()
	var ln net.Listener
	err := inNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// fetch connects from ns to addr over TCP and returns what the server
// wrote, or the error.
func fetch(ns, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := inNS(ns, func() error {
		var err error
		if timeout == 0 {
			timeout = 3 * time.Second
		}
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return string(b), err
}

// mustFetch fetches and checks the greeting.
func mustFetch(t testing.TB, ns, addr, want string) {
	t.Helper()
	got, err := fetch(ns, addr, 3*time.Second)
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", ns, addr, err)
	}
	if got != want {
		t.Fatalf("from %s to %s got %q, want %q", ns, addr, got, want)
	}
}

// mustNotFetch checks that a connection from ns to addr does not succeed
// within a short time.
func mustNotFetch(t testing.TB, ns, addr string) {
	t.Helper()
	got, err := fetch(ns, addr, 700*time.Millisecond)
	if err == nil {
		t.Fatalf("connect from %s to %s succeeded (%q), want it blocked", ns, addr, got)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Logf("blocked with %v", err)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
