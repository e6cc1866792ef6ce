package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/kindling-vm/kindling/vmm"
)

// Manager sets up and tears down a sandbox's whole network in one call
// each: a CNI attachment or a slot, its published ports and its egress
// policy, recorded in one Record. It is what the runtime calls; the pieces
// (CNI, Slots, Pool, Host.Publish, Host.ApplyEgress) stay usable alone.
type Manager struct {
	// Host is the host namespace; it overrides CNI.Host and Slots.Host.
	Host  Host
	CNI   CNI
	Slots Slots
	// Pool, if set, gives the slots (it must be made from the same Slots
	// and Host); a slot is always destroyed at the end, not put back.
	Pool *Pool
}

// Spec is what a sandbox asks of the network.
type Spec struct {
	SandboxID string
	// CNINetworks attaches the sandbox to these CNI networks (eth0, eth1,
	// … in the guest); none gives it a clone-safe slot.
	CNINetworks []string
	Ports       []PortMapping
	// Egress is the policy; nil leaves egress open and unwatched.
	Egress *EgressPolicy
}

// RecordVersion is the version of Record's JSON shape.
const RecordVersion = 1

// Record is everything a sandbox's network holds on the host; the runtime
// persists it with the sandbox and hands it to Teardown on every end of the
// sandbox (stop, VM exit, gc), dropping it only once Teardown returns nil.
type Record struct {
	Version   int            `json:"version"`
	SandboxID string         `json:"sandbox_id"`
	CNI       *CNIAttachment `json:"cni,omitempty"`
	Slot      *SlotRecord    `json:"slot,omitempty"`
	Ports     *Published     `json:"ports,omitempty"`
	Egress    *EgressRecord  `json:"egress,omitempty"`
}

func (m *Manager) cni() CNI     { c := m.CNI; c.Host = m.Host; return c }
func (m *Manager) slots() Slots { s := m.Slots; s.Host = m.Host; return s }

// Check validates a spec without touching the system: the sandbox ID, the
// CNI networks' conflists and plugins, ports and policy. The runtime calls
// it at create, so bad input fails before anything exists.
func (m *Manager) Check(ctx context.Context, spec Spec) error {
	if err := ValidateID(spec.SandboxID); err != nil {
		return err
	}
	for _, n := range spec.CNINetworks {
		if _, err := m.cni().Load(ctx, n); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, p := range spec.Ports {
		if _, err := ParsePort(p.String()); err != nil {
			return err
		}
		key := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
		if seen[key] {
			return invalid("port", p.String(), "host port "+key+" is given twice")
		}
		seen[key] = true
	}
	if p := spec.Egress; p != nil && p.Default != EgressDeny && p.Default != EgressAllow {
		return invalid("egress default", p.Default, `must be "deny" or "allow"`)
	}
	return m.slots().Validate()
}

// Setup builds the sandbox's network: the CNI attachment or a slot (from
// the pool if there is one), then the published ports, then the egress
// policy. On failure everything made is torn down again and the error says
// what failed.
func (m *Manager) Setup(ctx context.Context, spec Spec) (_ *Record, err error) {
	if err := m.Check(ctx, spec); err != nil {
		return nil, err
	}
	rec := &Record{Version: RecordVersion, SandboxID: spec.SandboxID}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Teardown(context.WithoutCancel(ctx), rec))
		}
	}()
	if len(spec.CNINetworks) > 0 {
		if rec.CNI, err = m.cni().Attach(ctx, spec.SandboxID, spec.CNINetworks); err != nil {
			return nil, err
		}
	} else {
		if m.Pool != nil {
			rec.Slot, err = m.Pool.Claim(ctx)
		} else {
			rec.Slot, err = m.slots().Create(ctx)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(spec.Ports) > 0 {
		if rec.Ports, err = m.Host.Publish(ctx, spec.SandboxID, rec.Target(), spec.Ports); err != nil {
			return nil, err
		}
	}
	if spec.Egress != nil {
		if rec.Egress, err = m.Host.ApplyEgress(ctx, spec.SandboxID, rec.EgressSource(), *spec.Egress); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// SetEgress changes a running sandbox's egress policy (nil removes it)
// and updates rec, which the runtime then persists. A DNS forwarder
// serving the sandbox needs SetPolicy(rec.Egress) after it.
func (m *Manager) SetEgress(ctx context.Context, rec *Record, p *EgressPolicy) error {
	if p == nil {
		if err := m.Host.RemoveEgress(ctx, rec.Egress); err != nil {
			return err
		}
		rec.Egress = nil
		return nil
	}
	eg, err := m.Host.ApplyEgress(ctx, rec.SandboxID, rec.EgressSource(), *p)
	if err != nil {
		return err
	}
	rec.Egress = eg
	return nil
}

// Teardown releases everything rec holds: egress table, port table, then
// the CNI attachment (DEL, namespace) or the slot. It tries every step and
// returns their errors joined; every step is idempotent, so calling it
// again (gc after a crash, a retry) is safe.
func (m *Manager) Teardown(ctx context.Context, rec *Record) error {
	if rec == nil {
		return nil
	}
	var errs []error
	if err := m.Host.RemoveEgress(ctx, rec.Egress); err != nil {
		errs = append(errs, err)
	}
	if err := m.Host.Unpublish(ctx, rec.Ports); err != nil {
		errs = append(errs, err)
	}
	if rec.CNI != nil {
		if err := m.cni().Detach(ctx, rec.CNI); err != nil {
			errs = append(errs, err)
		}
	}
	if rec.Slot != nil {
		if err := m.slots().Destroy(ctx, rec.Slot); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("tear down the network of sandbox %q: %w", rec.SandboxID, errors.Join(errs...))
	}
	return nil
}

// NetNS is the namespace the VMM must run in (vmm.Config.NetNS).
func (r *Record) NetNS() string {
	switch {
	case r.CNI != nil:
		return r.CNI.NetNS
	case r.Slot != nil:
		return r.Slot.NetNS
	}
	return ""
}

// Guests returns the guest side of each interface, eth0 first.
func (r *Record) Guests() []GuestConfig {
	if r.CNI != nil {
		var out []GuestConfig
		for _, in := range r.CNI.Interfaces {
			out = append(out, in.Guest)
		}
		return out
	}
	if r.Slot != nil {
		return []GuestConfig{r.Slot.Guest}
	}
	return nil
}

// KernelIPArg is the kernel's ip= argument for eth0 (the kernel configures
// one interface; the agent does the others).
func (r *Record) KernelIPArg() string {
	if g := r.Guests(); len(g) > 0 {
		return g[0].KernelIPArg("eth0")
	}
	return ""
}

// Interfaces returns the VMM's network interfaces, eth0 first: tap, guest
// MAC, and the rate limiters given (nil for none; see ParseRate).
func (r *Record) Interfaces(rx, tx *vmm.RateLimiter) []vmm.NetworkInterface {
	var out []vmm.NetworkInterface
	add := func(i int, tap, mac string) {
		out = append(out, vmm.NetworkInterface{ID: fmt.Sprintf("eth%d", i), TapName: tap, MAC: mac,
			RxRateLimiter: rx, TxRateLimiter: tx})
	}
	if r.CNI != nil {
		for i, in := range r.CNI.Interfaces {
			add(i, in.Tap, in.Guest.MAC)
		}
	}
	if r.Slot != nil {
		add(0, r.Slot.Tap, r.Slot.Guest.MAC)
	}
	return out
}

// Target is where the host reaches the sandbox: the slot's address, or
// the first CNI interface's IPv4 address.
func (r *Record) Target() netip.Addr {
	if r.Slot != nil {
		return r.Slot.Addr
	}
	if r.CNI != nil && len(r.CNI.Interfaces) > 0 {
		return r.CNI.Interfaces[0].Guest.Address.Addr()
	}
	return netip.Addr{}
}

// EgressSource is how the host tells the sandbox's traffic apart.
func (r *Record) EgressSource() EgressSource {
	if r.Slot != nil {
		return EgressSource{Iface: r.Slot.HostVeth}
	}
	return EgressSource{Addr: r.Target()}
}
