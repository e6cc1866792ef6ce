package vmm

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kindling-vm/kindling/fcapi"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// vcpuThreadPrefix is how Firecracker names its vCPU threads: "fc_vcpu 0".
const vcpuThreadPrefix = "fc_vcpu "

// VCPUThreads returns the host thread IDs of the VMM's vCPUs, ordered by
// vCPU index (for pinning or accounting). They exist once the microVM has
// started.
func (m *Machine) VCPUThreads(ctx context.Context) ([]int, error) {
	m.mu.Lock()
	p, ph := m.proc, m.phaseLocked()
	m.mu.Unlock()
	if p == nil || ph == phaseExited {
		return nil, &StateError{Op: "vcpu threads", State: ph.String()}
	}
	names, err := kunix.ThreadNames(p.pid)
	if err != nil {
		if kunix.IsNoProcess(err) {
			return nil, &StateError{Op: "vcpu threads", State: phaseExited.String()}
		}
		return nil, fmt.Errorf("vcpu threads: %w", err)
	}
	return vcpuThreads(names), nil
}

// vcpuThreads picks the vCPU threads out of a tid → name map, ordered by
// vCPU index.
func vcpuThreads(names map[int]string) []int {
	type vcpu struct{ index, tid int }
	var found []vcpu
	for tid, name := range names {
		rest, ok := strings.CutPrefix(name, vcpuThreadPrefix)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(rest))
		if err != nil || n < 0 {
			continue
		}
		found = append(found, vcpu{n, tid})
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].index != found[j].index {
			return found[i].index < found[j].index
		}
		return found[i].tid < found[j].tid
	})
	tids := make([]int, len(found))
	for i, v := range found {
		tids[i] = v.tid
	}
	return tids
}

// Version returns the running Firecracker release (probed at start).
func (m *Machine) Version(ctx context.Context) (fcapi.Version, error) {
	m.mu.Lock()
	ver, client, ph := m.version, m.client, m.phaseLocked()
	m.mu.Unlock()
	if !ver.IsZero() {
		return ver, nil
	}
	if client == nil || ph == phaseExited {
		return fcapi.Version{}, &StateError{Op: "version", State: ph.String()}
	}
	ver, err := client.Version(ctx)
	if err != nil {
		return fcapi.Version{}, fmt.Errorf("version: %w", err)
	}
	m.mu.Lock()
	m.version = ver
	m.mu.Unlock()
	return ver, nil
}

// Capabilities returns what the running Firecracker release supports.
func (m *Machine) Capabilities(ctx context.Context) (fcapi.Capabilities, error) {
	ver, err := m.Version(ctx)
	if err != nil {
		return fcapi.Capabilities{}, err
	}
	return fcapi.CapabilitiesOf(ver), nil
}

// FlushMetrics makes Firecracker write its metrics to MetricsPath now.
func (m *Machine) FlushMetrics(ctx context.Context) error {
	client, err := m.live("flush metrics", phaseRunning, phasePaused)
	if err != nil {
		return err
	}
	if m.cfg.MetricsPath == "" {
		return &StateError{Op: "flush metrics", State: "no metrics file configured", Want: "configured with a MetricsPath"}
	}
	if err := client.FlushMetrics(ctx); err != nil {
		return fmt.Errorf("flush metrics: %w", err)
	}
	return nil
}

// Client returns the API client of the running VMM, for endpoints the
// Machine does not wrap (MMDS, balloon statistics, …), or nil before Start.
// Requests that change the VM's devices or state behind the Machine's back
// make State() inaccurate.
func (m *Machine) Client() *fcapi.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.client
}
