package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/network"
)

// Egress policies and the slot pool in the runtime.
const (
	// EnvEgress names the environment variable holding the host's default
	// egress policy, "deny" or "allow", for sandboxes with a network whose
	// spec says none. Create records it in the spec.
	EnvEgress = "KINDLING_EGRESS"
	// EnvDNSUpstream names the environment variable of the resolver the
	// slots' DNS forwarders ask, ADDRESS:PORT (else the first nameserver
	// of /etc/resolv.conf). It is read by the monitor: pass it with
	// KINDLING_PASS_ENV.
	EnvDNSUpstream = "KINDLING_DNS_UPSTREAM"
)

// WithSlotPool gives sandboxes started with --net slot their slots from
// pool (made for the same host namespace as their Spec.NetNS) instead of
// building one on the start path. The pool belongs to the caller, who
// closes it; a slot taken from it is destroyed when its sandbox ends.
func WithSlotPool(pool *network.Pool) Option {
	return func(r *Runtime) { r.slotPool = pool }
}

// fillEgress completes a spec's egress settings at create: allow rules
// without a default mean deny; no setting at all takes the host's default
// (EnvEgress).
func fillEgress(spec *Spec) error {
	if spec.Egress == "" && len(spec.AllowEgress) > 0 {
		spec.Egress = network.EgressDeny
	}
	if spec.Egress == "" {
		spec.Egress = os.Getenv(EnvEgress)
		if spec.Egress != "" && spec.Egress != network.EgressDeny && spec.Egress != network.EgressAllow {
			return specError(fmt.Errorf("%s=%q: must be \"deny\" or \"allow\": fix or unset it", EnvEgress, spec.Egress))
		}
	}
	return nil
}

// egressPolicy parses the spec's egress settings; nil when it has none.
func egressPolicy(s Spec) (*network.EgressPolicy, error) {
	if s.Egress == "" && len(s.AllowEgress) == 0 {
		return nil, nil
	}
	def := s.Egress
	if def == "" {
		def = network.EgressDeny
	}
	p, err := network.ParseEgress(def, s.AllowEgress)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// EgressChange is a change of a running sandbox's egress policy.
type EgressChange struct {
	// Default, if set, replaces the policy's default: "deny" or "allow".
	Default string `json:"default,omitempty"`
	// Allow adds rules (CIDRs, addresses, domains); Revoke removes rules
	// as they were given.
	Allow  []string `json:"allow,omitempty"`
	Revoke []string `json:"revoke,omitempty"`
	// Clear drops every rule before Allow is added.
	Clear bool `json:"clear,omitempty"`
}

// SetEgress changes the egress policy of sandbox id while it runs, in one
// nf_tables transaction (no moment without a policy; established
// connections go on), and records it in the sandbox's spec, so that a
// restart keeps it. The sandbox's DNS forwarder follows at its next
// answer. A sandbox that is not running gets only its spec changed. The
// change is checked first: a bad rule changes nothing.
func (r *Runtime) SetEgress(ctx context.Context, id string, ch EgressChange) (_ Info, err error) {
	ctx, end := r.span(ctx, "sandbox.SetEgress", id)
	defer end(&err)
	l, err := r.st.Lock(ctx, id)
	if err != nil {
		return Info{}, r.loadError(id, err)
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		return Info{}, r.loadError(id, err)
	}
	if !rec.Spec.wantsNetwork() {
		return Info{}, fmt.Errorf("egress of sandbox %q: it has no slot or CNI network (create it with --net slot or --net cni:NETWORK): %w", id, ErrInvalidSpec)
	}
	spec := rec.Spec
	if ch.Default != "" {
		spec.Egress = ch.Default
	}
	rules := spec.AllowEgress
	if ch.Clear {
		rules = nil
	}
	revoke := map[string]bool{}
	for _, r := range ch.Revoke {
		revoke[r] = true
	}
	var kept []string
	for _, r := range rules {
		if !revoke[r] {
			kept = append(kept, r)
		}
	}
	seen := map[string]bool{}
	spec.AllowEgress = nil
	for _, r := range append(kept, ch.Allow...) {
		if !seen[r] {
			seen[r] = true
			spec.AllowEgress = append(spec.AllowEgress, r)
		}
	}
	if spec.Egress == "" {
		spec.Egress = network.EgressDeny
	}
	p, err := egressPolicy(spec)
	if err != nil {
		return Info{}, fmt.Errorf("egress of sandbox %q: %w: %w", id, err, ErrInvalidSpec)
	}
	if len(p.Domains) > 0 && !spec.NetSlot {
		return Info{}, fmt.Errorf("egress of sandbox %q: allow-egress %q: domain rules need a slot (--net slot): %w", id, p.Domains[0], ErrInvalidSpec)
	}
	if rec.Network != nil {
		if err := netManager(rec.Spec).SetEgress(ctx, rec.Network, p); err != nil {
			return Info{}, fmt.Errorf("egress of sandbox %q: %w", id, err)
		}
	}
	rec.Spec = spec
	if err := l.Save(&rec); err != nil {
		return Info{}, fmt.Errorf("egress of sandbox %q: %w", id, err)
	}
	return r.info(ctx, &rec), nil
}

// startSandboxDNS starts the DNS forwarder of sandbox id, whose record is
// rec, in the process that owns it while its VM runs (the monitor), when
// it has a slot; stop ends it and must run before the network is torn
// down. The forwarder reads the policy in force from the state store for
// each answer, so a change by SetEgress in another process counts at once.
func startSandboxDNS(st *store.Store, id string, rec *record, log *slog.Logger) (stop func()) {
	if rec.Network == nil || rec.Network.Slot == nil {
		return func() {}
	}
	cfg := network.SandboxDNS{Host: netManager(rec.Spec).Host, Record: rec.Network,
		Policy: func() *network.EgressRecord {
			var cur record
			if err := st.Load(id, &cur); err != nil || cur.Network == nil {
				return nil
			}
			return cur.Network.Egress
		}}
	if v := os.Getenv(EnvDNSUpstream); v != "" {
		up, err := netip.ParseAddrPort(v)
		if err != nil {
			log.Error("DNS forwarder", "err", fmt.Errorf("%s=%q: want ADDRESS:PORT: %w", EnvDNSUpstream, v, err))
			return func() {}
		}
		cfg.Upstream = up
	}
	s, err := network.StartSandboxDNS(cfg)
	if err != nil {
		// The guest has no resolver; everything else works.
		log.Error("DNS forwarder", "err", err)
		return func() {}
	}
	return func() {
		if err := s(); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("DNS forwarder", "err", err)
		}
	}
}

// startDNSOf starts the DNS forwarder of sandbox id (startSandboxDNS) from
// the record its Start saved; it is the monitor's Hooks.StartDNS, and what
// the helper a small monitor runs for it does (dnsMain).
func startDNSOf(st *store.Store, id string, log *slog.Logger) (stop func()) {
	var rec record
	if err := st.Load(id, &rec); err != nil {
		log.Error("DNS forwarder", "err", err)
		return func() {}
	}
	return startSandboxDNS(st, id, &rec, log)
}

// EgressSetter is the optional live egress change of a Controller.
type EgressSetter interface {
	// SetEgress changes a sandbox's egress policy, at once if it runs.
	SetEgress(ctx context.Context, id string, ch EgressChange) (Info, error)
}

var _ EgressSetter = (*Runtime)(nil)
