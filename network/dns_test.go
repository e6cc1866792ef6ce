package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// testDNS is a tiny authoritative DNS server in a test namespace, on UDP
// and TCP: A records from names (lower-case, final dot), NXDOMAIN for
// other names, an empty answer for other types. It counts the queries.
type testDNS struct {
	names map[string]string

	mu      sync.Mutex // guards queries
	queries int
}

func serveDNS(t testing.TB, ns, addr string, names map[string]string) *testDNS {
	t.Helper()
	d := &testDNS{names: names}
	var pc net.PacketConn
	var ln net.Listener
	if err := inNS(ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out, ok := d.answer(buf[:n]); ok {
				pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			q, err := readTCPMessage(c)
			if err == nil {
				if out, ok := d.answer(q); ok {
					writeTCPMessage(c, out)
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { pc.Close(); ln.Close(); wg.Wait() })
	return d
}

func (d *testDNS) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	d.mu.Lock()
	d.queries++
	d.mu.Unlock()
	ip, known := d.names[q.Name.String()]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	if known && q.Type == dnsmessage.TypeA {
		b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 300},
			dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()})
	}
	out, err := b.Finish()
	return out, err == nil
}

// lookup resolves name from inside ns through the resolver at server,
// over network ("udp" or "tcp").
func lookup(ns, network, server, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, server)
			return err
		})
		return c, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return r.LookupHost(ctx, name)
}

func TestEgressByDomain(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	dnsNS := newNS(t, "dns")
	linkNS(t, w.host.NetNS, dnsNS, "10.215.0.1/30", "10.215.0.2/30")
	upstream := serveDNS(t, dnsNS, "10.215.0.2:53", map[string]string{
		"allowed.test.":     "10.214.0.2",
		"www.allowed.test.": "10.214.0.2",
		"other.test.":       "10.214.0.2",
	})

	a := createSlot(t, w.slots())
	g := startGuest(t, a.NetNS, a.Tap, a.Guest)
	p, err := ParseEgress("deny", []string{"allowed.test"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := w.host.ApplyEgress(ctx, "kdnet-dns", EgressSource{Iface: a.HostVeth}, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.host.RemoveEgress(ctx, rec) })
	fwd, err := NewDNSForwarder(w.host, netip.MustParseAddrPort("10.215.0.2:53"), rec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ListenDNS(a.NetNS, netip.AddrPortFrom(a.Guest.DNS[0], 53))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- fwd.Serve(sctx, l) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	resolver := a.Guest.DNS[0].String() + ":53"

	mustNotFetch(t, g.ns, w.server) // nothing resolved yet
	// A name outside the policy resolves (DNS itself is not filtered) but
	// opens nothing, although it has the same address.
	if addrs, err := lookup(g.ns, "udp", resolver, "other.test"); err != nil || len(addrs) != 1 || addrs[0] != "10.214.0.2" {
		t.Fatalf("lookup other.test = %v, %v", addrs, err)
	}
	mustNotFetch(t, g.ns, w.server)
	// Over TCP too, still nothing.
	if addrs, err := lookup(g.ns, "tcp", resolver, "other.test"); err != nil || len(addrs) != 1 {
		t.Fatalf("lookup other.test over TCP = %v, %v", addrs, err)
	}
	mustNotFetch(t, g.ns, w.server)
	// The allowed name's answer opens its address.
	if addrs, err := lookup(g.ns, "udp", resolver, "www.allowed.test"); err != nil || len(addrs) != 1 || addrs[0] != "10.214.0.2" {
		t.Fatalf("lookup www.allowed.test = %v, %v", addrs, err)
	}
	mustFetch(t, g.ns, w.server, "hello from the server")
	upstream.mu.Lock()
	if upstream.queries < 2 {
		t.Errorf("the upstream answered %d queries, want the forwarded ones", upstream.queries)
	}
	upstream.mu.Unlock()

	// A policy change that keeps the domain keeps what was learned…
	p2, _ := ParseEgress("deny", []string{"allowed.test", "10.99.0.0/16"})
	if rec, err = w.host.ApplyEgress(ctx, "kdnet-dns", EgressSource{Iface: a.HostVeth}, p2); err != nil {
		t.Fatal(err)
	}
	fwd.SetPolicy(rec)
	mustFetch(t, g.ns, w.server, "hello from the server")
	// …one that drops it closes the address at once.
	p3, _ := ParseEgress("deny", []string{"10.99.0.0/16"})
	if rec, err = w.host.ApplyEgress(ctx, "kdnet-dns", EgressSource{Iface: a.HostVeth}, p3); err != nil {
		t.Fatal(err)
	}
	fwd.SetPolicy(rec)
	mustNotFetch(t, g.ns, w.server)
	// With the domain back the set starts empty; an answer over TCP
	// fills it.
	if rec, err = w.host.ApplyEgress(ctx, "kdnet-dns", EgressSource{Iface: a.HostVeth}, p2); err != nil {
		t.Fatal(err)
	}
	fwd.SetPolicy(rec)
	mustNotFetch(t, g.ns, w.server)
	if addrs, err := lookup(g.ns, "tcp", resolver, "allowed.test"); err != nil || len(addrs) != 1 || addrs[0] != "10.214.0.2" {
		t.Fatalf("lookup allowed.test over TCP = %v, %v", addrs, err)
	}
	mustFetch(t, g.ns, w.server, "hello from the server")
}

func TestResolvConfUpstream(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := ResolvConfUpstream(write("# generated\nsearch example.com\nnameserver not-an-address\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n"))
	if err != nil || got.String() != "127.0.0.53:53" {
		t.Errorf("ResolvConfUpstream = %v, %v; want 127.0.0.53:53", got, err)
	}
	if _, err := ResolvConfUpstream(write("search x\n")); !errors.Is(err, ErrNotFound) {
		t.Errorf("no nameserver: %v, want ErrNotFound", err)
	}
	if _, err := ResolvConfUpstream(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
	if _, err := NewDNSForwarder(Host{}, netip.AddrPort{}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewDNSForwarder without upstream = %v, want ErrInvalid", err)
	}
}
