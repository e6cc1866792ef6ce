package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// DefaultResolvConf is where StartSandboxDNS finds the upstream resolver
// when none is given.
const DefaultResolvConf = "/etc/resolv.conf"

// SandboxDNS says how to run a sandbox's DNS forwarder (StartSandboxDNS).
type SandboxDNS struct {
	// Host is the host namespace the upstream is dialled from.
	Host Host
	// Record is the sandbox's network; the forwarder serves a slot.
	Record *Record
	// Upstream is the resolver asked; zero for the first nameserver of
	// DefaultResolvConf.
	Upstream netip.AddrPort
	// Policy, if set, returns the egress record in force, asked before
	// learning from each answer, so that a policy changed by another
	// process is followed at once; else Record.Egress is used.
	Policy func() *EgressRecord
}

// StartSandboxDNS starts the resolver a slot's guest is told to use
// (SlotGateway, port 53, inside the slot's namespace): it forwards queries
// upstream and, for domains the egress policy allows, adds the answers'
// addresses to the policy's sets before the guest sees them. It is the
// forwarder's one entry point for the process that owns the sandbox while
// its VM runs (its monitor): call it once the network is set up, and call
// stop before tearing the network down. stop closes the sockets and waits
// for the queries in flight; it returns what ended serving, nil for stop
// itself. A CNI network has no forwarder: ErrNotSupported.
func StartSandboxDNS(cfg SandboxDNS) (stop func() error, err error) {
	rec := cfg.Record
	if rec == nil || rec.Slot == nil {
		return nil, fmt.Errorf("DNS forwarder: only a slot's guest is given one: %w", ErrNotSupported)
	}
	up := cfg.Upstream
	if !up.IsValid() {
		if up, err = ResolvConfUpstream(DefaultResolvConf); err != nil {
			return nil, fmt.Errorf("DNS forwarder of sandbox %q: %w", rec.SandboxID, err)
		}
	}
	f, err := NewDNSForwarder(cfg.Host, up, rec.Egress)
	if err != nil {
		return nil, err
	}
	if cfg.Policy != nil {
		f.SetPolicySource(cfg.Policy)
	}
	l, err := ListenDNS(rec.Slot.NetNS, netip.AddrPortFrom(SlotGateway.Addr(), 53))
	if err != nil {
		return nil, fmt.Errorf("DNS forwarder of sandbox %q: %w", rec.SandboxID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx, l) }()
	return func() error {
		cancel()
		err := <-done
		done <- err // a second stop returns the same
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}, nil
}
