package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/internal/netdev"
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
	// and Host; a claimed slot's tap is handed to Slots.TapOwner when that
	// is set); a slot is always destroyed at the end, not put back.
	Pool *Pool
	// TracerProvider, if set, gets a span per Setup, SetEgress, Teardown
	// and TeardownID.
	TracerProvider trace.TracerProvider
}

// span starts the span of one whole operation on a sandbox's network; the
// returned func ends it, recording *errp when it is not nil.
func (m *Manager) span(ctx context.Context, name, id string) (context.Context, func(errp *error)) {
	tp := m.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	ctx, sp := tp.Tracer("github.com/kindling-vm/kindling/network").Start(ctx, name,
		trace.WithAttributes(attribute.String("sandbox.id", id)))
	return ctx, func(errp *error) {
		if errp != nil && *errp != nil {
			sp.RecordError(*errp)
			sp.SetStatus(codes.Error, (*errp).Error())
		}
		sp.End()
	}
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
	ctx, end := m.span(ctx, "network.Setup", spec.SandboxID)
	defer end(&err)
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
			if err == nil && m.Slots.TapOwner != nil {
				// The pool made its slots before their user was known.
				err = netdev.SetTapOwner(rec.Slot.Tap, rec.Slot.NetNS, *m.Slots.TapOwner.netdev())
			}
		} else {
			rec.Slot, err = m.slots().Create(ctx)
		}
		if err != nil {
			return nil, err
		}
		if err = m.tagSlot(rec.Slot, spec.SandboxID); err != nil {
			return nil, err
		}
	}
	if len(spec.Ports) > 0 || spec.Egress != nil {
		if rec.Ports, rec.Egress, err = m.publishAndApply(ctx, spec, rec); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// publishAndApply publishes the ports and applies the egress policy in one
// nf_tables transaction (what Host.Publish and Host.ApplyEgress do, less a
// kernel commit): both tables appear together or neither does.
func (m *Manager) publishAndApply(ctx context.Context, spec Spec, rec *Record) (*Published, *EgressRecord, error) {
	if len(spec.Ports) > 0 {
		if t := rec.Target(); !t.Is4() {
			return nil, nil, invalid("publish target", t.String(), "must be an IPv4 address")
		}
		unlock, err := m.Host.lock(ctx, portsLock)
		if err != nil {
			return nil, nil, err
		}
		defer unlock()
	}
	c, err := nftIn(m.Host.NetNS)
	if err != nil {
		return nil, nil, err
	}
	defer closeNft(c)
	var pub *Published
	var eg *EgressRecord
	if len(spec.Ports) > 0 {
		if pub, err = m.Host.queuePublish(c, spec.SandboxID, rec.Target(), spec.Ports); err != nil {
			return nil, nil, err
		}
	}
	if spec.Egress != nil {
		if eg, err = queueEgress(c, spec.SandboxID, rec.EgressSource(), *spec.Egress); err != nil {
			return nil, nil, err
		}
	}
	if err := c.Flush(); err != nil {
		return nil, nil, fmt.Errorf("publish ports and apply egress policy of sandbox %q: %w", spec.SandboxID, err)
	}
	return pub, eg, nil
}

// SetEgress changes a running sandbox's egress policy (nil removes it)
// and updates rec, which the runtime then persists. A DNS forwarder
// serving the sandbox needs SetPolicy(rec.Egress) after it.
func (m *Manager) SetEgress(ctx context.Context, rec *Record, p *EgressPolicy) (err error) {
	ctx, end := m.span(ctx, "network.SetEgress", rec.SandboxID)
	defer end(&err)
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
func (m *Manager) Teardown(ctx context.Context, rec *Record) (err error) {
	if rec == nil {
		return nil
	}
	ctx, end := m.span(ctx, "network.Teardown", rec.SandboxID)
	defer end(&err)
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

// slotTag is the alias a slot's host veth carries while a sandbox has it,
// so that TeardownID finds the slot without a record.
func slotTag(sandboxID string) string { return "kindling sandbox " + sandboxID }

func (m *Manager) tagSlot(slot *SlotRecord, sandboxID string) error {
	h, err := netlinkIn(m.Host.NetNS)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(slot.HostVeth)
	if err == nil {
		err = h.LinkSetAlias(l, slotTag(sandboxID))
	}
	if err != nil {
		return fmt.Errorf("tag slot %d with sandbox %q: %w", slot.Index, sandboxID, err)
	}
	return nil
}

// TeardownID releases what a sandbox may hold when its Record is lost (a
// crash between Setup and persisting it): the egress and port tables named
// after its ID, its CNI attachments — DEL with the conflist libcni cached at
// ADD, else the one in the conf dir — and namespace, and the slot whose
// host veth is tagged with its ID. networks are the CNI networks its spec
// named, in order. Like Teardown it is idempotent and tries every step.
func (m *Manager) TeardownID(ctx context.Context, sandboxID string, networks []string) (err error) {
	if err := ValidateID(sandboxID); err != nil {
		return fmt.Errorf("tear down by ID: %w", err)
	}
	ctx, end := m.span(ctx, "network.TeardownID", sandboxID)
	defer end(&err)
	rec := &Record{Version: RecordVersion, SandboxID: sandboxID,
		Ports:  &Published{SandboxID: sandboxID, Table: portsTableName(sandboxID)},
		Egress: &EgressRecord{SandboxID: sandboxID, Table: egressTableName(sandboxID)},
	}
	var errs []error
	if len(networks) > 0 {
		c := m.cni()
		att := &CNIAttachment{SandboxID: sandboxID, NetNS: filepath.Join(netdev.NetNSDir, CNINetNSName(sandboxID))}
		for i, n := range networks {
			iface := CNIInterface{Network: n, IfName: fmt.Sprintf("eth%d", i), Tap: fmt.Sprintf("kdtap%d", i)}
			conf, _, err := c.config().GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: n}, c.runtimeConf(att, iface))
			if err != nil || len(conf) == 0 {
				list, lerr := c.Load(ctx, n)
				if lerr != nil {
					// With neither libcni's cache entry (written by a
					// successful ADD, removed by DEL) nor the namespace,
					// there is nothing left to DEL.
					if _, nserr := netdev.ResolveNetNS(att.NetNS); errors.Is(nserr, netdev.ErrNotFound) {
						continue
					}
					errs = append(errs, fmt.Errorf("CNI network %q: no cached conflist and %w", n, lerr))
					continue
				}
				conf = list.Bytes
			}
			iface.ConfList = conf
			att.Interfaces = append(att.Interfaces, iface)
		}
		rec.CNI = att
	}
	slot, err := m.findSlot(sandboxID)
	if err != nil {
		errs = append(errs, err)
	}
	rec.Slot = slot
	if err := m.Teardown(ctx, rec); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// findSlot finds the slot tagged with the sandbox's ID, or nil.
func (m *Manager) findSlot(sandboxID string) (*SlotRecord, error) {
	h, err := netlinkIn(m.Host.NetNS)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("find the slot of sandbox %q: %w", sandboxID, err)
	}
	for _, l := range links {
		a := l.Attrs()
		if !isSlotVeth(a.Name) || a.Alias != slotTag(sandboxID) {
			continue
		}
		index, err := strconv.Atoi(strings.TrimPrefix(a.Name, slotVethPrefix))
		if err != nil {
			continue
		}
		return &SlotRecord{Index: index, HostVeth: a.Name}, nil
	}
	return nil, nil
}
