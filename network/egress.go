package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Egress defaults.
const (
	EgressDeny  = "deny"
	EgressAllow = "allow"
)

// EgressPolicy is what a sandbox may connect to: everything (allow) or
// only the CIDRs and domains listed (deny).
type EgressPolicy struct {
	Default string         `json:"default"` // EgressDeny or EgressAllow
	CIDRs   []netip.Prefix `json:"cidrs,omitempty"`
	// Domains are allowed with their subdomains, lower-case, no final dot.
	Domains []string `json:"domains,omitempty"`
}

// ParseEgress checks a default ("deny" or "allow") and rules, each a CIDR,
// an IP address or a domain name, as --egress and --allow-egress give
// them. Errors are *InvalidError, one line, naming the rule.
func ParseEgress(def string, rules []string) (EgressPolicy, error) {
	p := EgressPolicy{Default: def}
	if def != EgressDeny && def != EgressAllow {
		return p, invalid("egress default", def, `must be "deny" or "allow"`)
	}
	for _, r := range rules {
		switch {
		case strings.Contains(r, "/"):
			pfx, err := netip.ParsePrefix(r)
			if err != nil {
				return p, invalid("egress rule", r, "not a valid CIDR (want ADDRESS/BITS, as 10.0.0.0/8)")
			}
			p.CIDRs = append(p.CIDRs, pfx.Masked())
		case looksLikeIP(r):
			a, err := netip.ParseAddr(r)
			if err != nil {
				return p, invalid("egress rule", r, "not a valid IP address")
			}
			p.CIDRs = append(p.CIDRs, netip.PrefixFrom(a, a.BitLen()))
		default:
			d, err := normalizeDomain(r)
			if err != nil {
				return p, invalid("egress rule", r, err.Error())
			}
			if !slices.Contains(p.Domains, d) {
				p.Domains = append(p.Domains, d)
			}
		}
	}
	return p, nil
}

// looksLikeIP reports whether s can only be meant as an address: it has a
// ':' or is all digits and dots.
func looksLikeIP(s string) bool {
	if strings.Contains(s, ":") {
		return true
	}
	return s != "" && strings.Trim(s, "0123456789.") == ""
}

// normalizeDomain checks a domain name (RFC 1123 labels, at least two)
// and returns it lower-case without a final dot.
func normalizeDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	if d == "" {
		return "", errors.New("empty (want a CIDR or a domain name)")
	}
	if len(d) > 253 {
		return "", errors.New("domain name longer than 253 bytes")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", errors.New("not a CIDR or a domain name with a dot (as example.com)")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", errors.New("not a domain name: each label must be 1 to 63 bytes")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", errors.New("not a domain name: a label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("not a CIDR or a domain name: %q is not a letter, digit or '-'", c)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", errors.New("not a domain name: the last label is all digits")
	}
	return d, nil
}

// AllowsDomain reports whether the policy's domain rules cover name (a DNS
// name, any case, with or without the final dot).
func (p EgressPolicy) AllowsDomain(name string) bool {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	for _, d := range p.Domains {
		if n == d || strings.HasSuffix(n, "."+d) {
			return true
		}
	}
	return false
}

// EgressSource says how the host tells a sandbox's traffic apart.
type EgressSource struct {
	// Iface is the host-side interface the sandbox's traffic arrives on:
	// a slot's HostVeth. The guest cannot forge it.
	Iface string `json:"iface,omitempty"`
	// Addr is the sandbox's source address, for a CNI interface (whose tap
	// filter keeps the guest from forging another).
	Addr netip.Addr `json:"addr,omitzero"`
}

// EgressRecord is a sandbox's egress policy as applied; the runtime
// persists it, hands it to ApplyEgress again to change the policy and to
// RemoveEgress at the end.
type EgressRecord struct {
	SandboxID string       `json:"sandbox_id"`
	Table     string       `json:"table"` // inet-family table in the host namespace
	Source    EgressSource `json:"source"`
	Policy    EgressPolicy `json:"policy"`
}

// Domain-learned addresses stay in the sets for the answer's TTL, within
// these bounds.
const (
	minDNSTimeout = time.Minute
	maxDNSTimeout = time.Hour
)

// ApplyEgress enforces p on the sandbox's traffic from src, replacing the
// policy it had, in one nf_tables transaction: there is no moment without
// a policy, and connections already established stay up. A table per
// sandbox holds interval sets of the allowed CIDRs, timeout sets of the
// addresses its DNS forwarder learned for allowed domains (kept across
// changes that keep the domains), and forward and input chains that
// accept established traffic and traffic to the sets, then drop (deny) or
// accept (allow) the rest.
func (h Host) ApplyEgress(ctx context.Context, sandboxID string, src EgressSource, p EgressPolicy) (*EgressRecord, error) {
	if err := ValidateID(sandboxID); err != nil {
		return nil, fmt.Errorf("apply egress policy: %w", err)
	}
	if err := checkEgress(sandboxID, src, p); err != nil {
		return nil, err
	}
	c, err := nftIn(h.NetNS)
	if err != nil {
		return nil, err
	}
	defer closeNft(c)
	rec, err := queueEgress(c, sandboxID, src, p)
	if err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("apply egress policy of %q: %w", sandboxID, err)
	}
	return rec, nil
}

// checkEgress checks a policy and its source without touching the system.
func checkEgress(sandboxID string, src EgressSource, p EgressPolicy) error {
	if p.Default != EgressDeny && p.Default != EgressAllow {
		return invalid("egress default", p.Default, `must be "deny" or "allow"`)
	}
	if (src.Iface == "") == !src.Addr.IsValid() {
		return invalid("egress source of sandbox", sandboxID, "give exactly one of an interface and an address")
	}
	return nil
}

// queueEgress queues the sandbox's egress table on c (replacing the one it
// has); the caller flushes c.
func queueEgress(c *nftables.Conn, sandboxID string, src EgressSource, p EgressPolicy) (*EgressRecord, error) {
	if err := checkEgress(sandboxID, src, p); err != nil {
		return nil, err
	}
	rec := &EgressRecord{SandboxID: sandboxID, Table: egressTableName(sandboxID), Source: src, Policy: p}
	var keep4, keep6 []nftables.SetElement
	if old, err := c.ListTableOfFamily(rec.Table, nftables.TableFamilyINet); err == nil {
		keep4, keep6 = learned(c, old, "dns4", p), learned(c, old, "dns6", p)
		c.DelTable(old)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: rec.Table})
	var v4, v6 []netip.Prefix
	for _, pfx := range p.CIDRs {
		if pfx.Addr().Is4() {
			v4 = append(v4, pfx)
		} else {
			v6 = append(v6, pfx)
		}
	}
	sets := []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{&nftables.Set{Table: t, Name: "allow4", KeyType: nftables.TypeIPAddr, Interval: true}, intervalElements(v4)},
		{&nftables.Set{Table: t, Name: "allow6", KeyType: nftables.TypeIP6Addr, Interval: true}, intervalElements(v6)},
		{&nftables.Set{Table: t, Name: "dns4", KeyType: nftables.TypeIPAddr, HasTimeout: true}, refreshed(keep4)},
		{&nftables.Set{Table: t, Name: "dns6", KeyType: nftables.TypeIP6Addr, HasTimeout: true}, refreshed(keep6)},
	}
	for _, s := range sets {
		if err := c.AddSet(s.set, s.elems); err != nil {
			return nil, fmt.Errorf("apply egress policy of %q: set %s: %w", sandboxID, s.set.Name, err)
		}
	}
	from := matchSource(src)
	for _, hook := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"forward", nftables.ChainHookForward}, {"input", nftables.ChainHookInput}} {
		ch := c.AddChain(&nftables.Chain{Table: t, Name: hook.name, Type: nftables.ChainTypeFilter,
			Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
		add := func(parts ...[]expr.Any) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(append([][]expr.Any{from}, parts...)...)})
		}
		add(matchEstablished(), accept())
		add(matchNfproto(unix.NFPROTO_IPV4), lookupDaddr(4, "allow4"), accept())
		add(matchNfproto(unix.NFPROTO_IPV4), lookupDaddr(4, "dns4"), accept())
		add(matchNfproto(unix.NFPROTO_IPV6), lookupDaddr(6, "allow6"), accept())
		add(matchNfproto(unix.NFPROTO_IPV6), lookupDaddr(6, "dns6"), accept())
		if p.Default == EgressDeny {
			add(drop())
		}
	}
	return rec, nil
}

// learned returns the elements of a DNS set of table t whose domain (the
// element's comment) p still allows.
func learned(c *nftables.Conn, t *nftables.Table, set string, p EgressPolicy) []nftables.SetElement {
	s, err := c.GetSetByName(t, set)
	if err != nil {
		return nil
	}
	elems, _ := c.GetSetElements(s)
	var out []nftables.SetElement
	for _, e := range elems {
		if p.AllowsDomain(e.Comment) {
			out = append(out, e)
		}
	}
	return out
}

// refreshed turns read elements into elements to add with their time left.
func refreshed(in []nftables.SetElement) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range in {
		left := e.Expires.Round(time.Second)
		if left <= 0 {
			continue
		}
		out = append(out, nftables.SetElement{Key: e.Key, Timeout: left, Comment: e.Comment})
	}
	return out
}

// RemoveEgress deletes the sandbox's egress table. It is idempotent.
func (h Host) RemoveEgress(ctx context.Context, rec *EgressRecord) error {
	if rec == nil {
		return nil
	}
	return deleteTable(h.NetNS, nftables.TableFamilyINet, rec.Table)
}

// AllowResolved adds addresses learned from a DNS answer for domain (one
// the policy allows) to the sandbox's sets, for ttl (kept within 1 minute
// to 1 hour). Each element remembers its domain, so a policy change that
// drops the domain drops its addresses.
func (h Host) AllowResolved(ctx context.Context, rec *EgressRecord, domain string, addrs []netip.Addr, ttl time.Duration) error {
	ttl = min(max(ttl, minDNSTimeout), maxDNSTimeout)
	var e4, e6 []nftables.SetElement
	for _, a := range addrs {
		a = a.Unmap()
		e := nftables.SetElement{Key: a.AsSlice(), Timeout: ttl, Comment: domain}
		if a.Is4() {
			e4 = append(e4, e)
		} else {
			e6 = append(e6, e)
		}
	}
	if len(e4)+len(e6) == 0 {
		return nil
	}
	c, err := nftIn(h.NetNS)
	if err != nil {
		return err
	}
	defer closeNft(c)
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: rec.Table}
	for _, s := range []struct {
		name  string
		typ   nftables.SetDatatype
		elems []nftables.SetElement
	}{{"dns4", nftables.TypeIPAddr, e4}, {"dns6", nftables.TypeIP6Addr, e6}} {
		if len(s.elems) == 0 {
			continue
		}
		set := &nftables.Set{Table: t, Name: s.name, KeyType: s.typ, HasTimeout: true}
		if err := c.SetAddElements(set, s.elems); err != nil {
			return fmt.Errorf("allow resolved addresses for %q: %w", rec.SandboxID, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("allow resolved addresses for %q: %w", rec.SandboxID, err)
	}
	return nil
}

// matchSource matches the sandbox's traffic in an inet table.
func matchSource(src EgressSource) []expr.Any {
	if src.Iface != "" {
		return matchIif(src.Iface)
	}
	if src.Addr.Is4() {
		return concat(matchNfproto(unix.NFPROTO_IPV4), matchPayload(12, src.Addr.AsSlice()))
	}
	return concat(matchNfproto(unix.NFPROTO_IPV6), matchPayload(8, src.Addr.AsSlice()))
}

// lookupDaddr matches a destination address in the named set.
func lookupDaddr(family int, set string) []expr.Any {
	off, n := uint32(16), uint32(4)
	if family == 6 {
		off, n = 24, 16
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

// intervalElements turns prefixes into interval-set elements: overlapping
// and adjacent ranges merged (the kernel refuses overlaps), each as a start
// element and an end element one past its last address.
func intervalElements(pfxs []netip.Prefix) []nftables.SetElement {
	type rng struct{ lo, hi netip.Addr }
	var rs []rng
	for _, p := range pfxs {
		p = p.Masked()
		rs = append(rs, rng{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b rng) int { return a.lo.Compare(b.lo) })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if next := last.hi.Next(); !next.IsValid() || r.lo.Compare(next) <= 0 {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	var out []nftables.SetElement
	for _, r := range merged {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if end := r.hi.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
