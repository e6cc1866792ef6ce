package network

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEgress(t *testing.T) {
	p, err := ParseEgress("deny", []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "Example.COM.", "api.example.org", "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.CIDRs; len(got) != 3 || got[0].String() != "10.0.0.0/8" || got[1].String() != "192.168.1.7/32" || got[2].String() != "fd00::/8" {
		t.Errorf("CIDRs = %v", got)
	}
	if got := strings.Join(p.Domains, ","); got != "example.com,api.example.org" {
		t.Errorf("Domains = %s", got)
	}
	for name, want := range map[string]bool{"example.com": true, "WWW.example.com.": true, "badexample.com": false,
		"example.org": false, "api.example.org": true, "x.api.example.org": true} {
		if got := p.AllowsDomain(name); got != want {
			t.Errorf("AllowsDomain(%q) = %v, want %v", name, got, want)
		}
	}
	bad := []struct{ def, rule, want string }{
		{"maybe", "", `egress default "maybe": must be "deny" or "allow"`},
		{"deny", "10.0.0.0/33", `egress rule "10.0.0.0/33": not a valid CIDR (want ADDRESS/BITS, as 10.0.0.0/8)`},
		{"deny", "example.com/8", `egress rule "example.com/8": not a valid CIDR (want ADDRESS/BITS, as 10.0.0.0/8)`},
		{"deny", "300.1.1.1", `egress rule "300.1.1.1": not a valid IP address`},
		{"deny", "exa mple.com", `egress rule "exa mple.com": not a CIDR or a domain name: ' ' is not a letter, digit or '-'`},
		{"deny", "-bad.com", `egress rule "-bad.com": not a domain name: a label starts or ends with '-'`},
		{"deny", "localhost", `egress rule "localhost": not a CIDR or a domain name with a dot (as example.com)`},
		{"deny", "a..b", `egress rule "a..b": not a domain name: each label must be 1 to 63 bytes`},
		{"deny", "*.example.com", `egress rule "*.example.com": not a CIDR or a domain name: '*' is not a letter, digit or '-'`},
		{"deny", "", `egress rule "": empty (want a CIDR or a domain name)`},
	}
	for _, tt := range bad {
		var rules []string
		if tt.def == "deny" {
			rules = []string{tt.rule}
		}
		_, err := ParseEgress(tt.def, rules)
		if err == nil || err.Error() != tt.want || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseEgress(%q, %q) = %v\nwant %s", tt.def, tt.rule, err, tt.want)
		}
	}
}

func FuzzParseEgress(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "example.com", "::1", "a.b", "-", "1.2.3.4/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseEgress("deny", []string{s})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseEgress(%q): %v", s, err)
			}
			return
		}
		if len(p.CIDRs)+len(p.Domains) != 1 {
			t.Fatalf("ParseEgress(%q) = %+v, want one rule", s, p)
		}
		for _, d := range p.Domains {
			if !p.AllowsDomain(d) || len(d) > 253 {
				t.Fatalf("ParseEgress(%q) gave domain %q", s, d)
			}
		}
		// One CIDR is one start and at most one end element.
		if n := len(intervalElements(p.CIDRs)); n > 2 || len(p.CIDRs) == 1 && n == 0 {
			t.Fatalf("ParseEgress(%q): %d interval elements", s, n)
		}
	})
}

func TestIntervalElements(t *testing.T) {
	in := []netip.Prefix{mustPrefix("10.0.0.0/24"), mustPrefix("10.0.1.0/24"), mustPrefix("10.0.0.128/25"),
		mustPrefix("192.168.0.1/32"), mustPrefix("255.255.255.0/24")}
	var got []string
	for _, e := range intervalElements(in) {
		a, _ := netip.AddrFromSlice(e.Key)
		s := a.String()
		if e.IntervalEnd {
			s = "end " + s
		}
		got = append(got, s)
	}
	want := "10.0.0.0,end 10.0.2.0,192.168.0.1,end 192.168.0.2,255.255.255.0"
	if strings.Join(got, ",") != want {
		t.Errorf("intervalElements = %s\nwant %s", strings.Join(got, ","), want)
	}
}

func TestEgressPolicyLive(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	a := createSlot(t, w.slots())
	g := startGuest(t, a.NetNS, a.Tap, a.Guest)
	src := EgressSource{Iface: a.HostVeth}
	const id = "kdnet-eg"

	mustFetch(t, g.ns, w.server, "hello from the server") // no policy yet
	apply := func(def string, rules ...string) *EgressRecord {
		t.Helper()
		p, err := ParseEgress(def, rules)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := w.host.ApplyEgress(ctx, id, src, p)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	rec := apply("deny")
	t.Cleanup(func() { w.host.RemoveEgress(ctx, rec) })
	mustNotFetch(t, g.ns, w.server)
	// The host's own addresses are covered too.
	serve(t, w.host.NetNS, "0.0.0.0:2222", "host service")
	mustNotFetch(t, g.ns, "10.214.0.1:2222")

	// Changed live: an allowed CIDR lets the connection through, the
	// host's address (not in it) stays blocked.
	apply("deny", "10.214.0.2/32", "10.99.0.0/16")
	mustFetch(t, g.ns, w.server, "hello from the server")
	mustNotFetch(t, g.ns, "10.214.0.1:2222")
	apply("allow")
	mustFetch(t, g.ns, "10.214.0.1:2222", "host service")
	apply("deny", "10.99.0.0/16")
	mustNotFetch(t, g.ns, w.server)

	if err := w.host.RemoveEgress(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := w.host.RemoveEgress(ctx, rec); err != nil {
		t.Errorf("second RemoveEgress: %v", err)
	}
	mustFetch(t, g.ns, w.server, "hello from the server")
	inv, err := Leaks(ctx, LeakOptions{Host: w.host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Tables) != 0 {
		t.Errorf("tables after RemoveEgress: %v", inv.Tables)
	}
}

func TestApplyEgressBadInput(t *testing.T) {
	h := Host{}
	ctx := context.Background()
	deny := EgressPolicy{Default: EgressDeny}
	for _, tt := range []struct {
		id  string
		src EgressSource
		p   EgressPolicy
	}{
		{"-x", EgressSource{Iface: "kdh0"}, deny},
		{"sb", EgressSource{}, deny},
		{"sb", EgressSource{Iface: "kdh0", Addr: netip.MustParseAddr("10.0.0.1")}, deny},
		{"sb", EgressSource{Iface: "kdh0"}, EgressPolicy{Default: "sometimes"}},
	} {
		if _, err := h.ApplyEgress(ctx, tt.id, tt.src, tt.p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ApplyEgress(%q, %+v, %+v) = %v, want ErrInvalid", tt.id, tt.src, tt.p, err)
		}
	}
}

// Without a policy, slots reach each other through the host; a deny
// policy stops that too.
func TestEgressDenyCoversOtherSlots(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	a, b := createSlot(t, w.slots()), createSlot(t, w.slots())
	ga := startGuest(t, a.NetNS, a.Tap, a.Guest)
	gb := startGuest(t, b.NetNS, b.Tap, b.Guest)
	serve(t, gb.ns, "0.0.0.0:80", "guest b")
	mustFetch(t, ga.ns, b.Addr.String()+":80", "guest b")
	p, _ := ParseEgress("deny", []string{"10.214.0.0/30"})
	rec, err := w.host.ApplyEgress(ctx, "kdnet-lat", EgressSource{Iface: a.HostVeth}, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.host.RemoveEgress(ctx, rec) })
	mustNotFetch(t, ga.ns, b.Addr.String()+":80")
	mustFetch(t, ga.ns, w.server, "hello from the server")
}
