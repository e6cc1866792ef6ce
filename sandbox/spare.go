package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/kindling-vm/kindling/internal/monitor"
)

// MaxSpareMonitors bounds WithSpareMonitors: each spare is an idle process.
const MaxSpareMonitors = 64

// WithSpareMonitors keeps n monitor processes started ahead of need (0, the
// default: none). A start claims one, which takes up its sandbox (its log,
// working directory and command line become the sandbox's) instead of a
// new process being started on the start's path: a monitor's start is a
// whole Go program's start, the largest part of kindling's own time in a
// start or clone. The runtime starts them at FillSpareMonitors (Open
// spawns nothing) and replaces each one claimed after the start that
// claimed it, one at a time in the background; a start that finds none
// starts its monitor as without spares. A spare is an idle monitor (the small one: ~3 MiB resident,
// 0.5 MiB of it its own, the rest code shared with other monitors); it
// ends when the runtime's process does (its stdin closes) or at Close.
// For long-lived programs (kindlingd): a command that starts one sandbox
// and exits would only pay for spares it never uses. n is capped at
// MaxSpareMonitors.
func WithSpareMonitors(n int) Option {
	return func(r *Runtime) { r.spares.want = min(max(n, 0), MaxSpareMonitors) }
}

// spareMonitors are a runtime's spare monitors.
type spareMonitors struct {
	mu      sync.Mutex // guards the fields below
	want    int
	idle    []*monitorProc
	filling bool // a filler goroutine runs
	closed  bool
	wg      sync.WaitGroup // the filler
}

// SpareMonitors returns how many spare monitors are ready to be claimed.
func (r *Runtime) SpareMonitors() int {
	r.spares.mu.Lock()
	defer r.spares.mu.Unlock()
	return len(r.spares.idle)
}

// Close ends the runtime's spare monitors and stops making new ones;
// sandboxes and their monitors are not affected, and the runtime stays
// usable (its starts then start their monitors). It returns once the
// spares are gone.
func (r *Runtime) Close() error {
	p := &r.spares
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, m := range idle {
		m.kill()
	}
	return nil
}

// FillSpareMonitors starts the spare monitors of WithSpareMonitors in the
// background, one at a time, until there are as many as wanted. Starts
// call it too, after claiming one; it does nothing when the runtime has
// no spares to make, is making them already, or was closed.
func (r *Runtime) FillSpareMonitors() {
	p := &r.spares
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.filling || p.closed || len(p.idle) >= p.want {
		return
	}
	p.filling = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			m, err := r.startSpare()
			p.mu.Lock()
			if err != nil || p.closed {
				p.filling = false
				p.mu.Unlock()
				if err != nil {
					// The next start tries again, after its own.
					r.log.Warn("start a spare monitor", "err", err)
				} else {
					m.kill()
				}
				return
			}
			p.idle = append(p.idle, m)
			full := len(p.idle) >= p.want
			if full {
				p.filling = false
			}
			p.mu.Unlock()
			if full {
				return
			}
		}
	}()
}

// startSpare starts one spare monitor: in /, its output discarded until
// it is claimed, argument 1 the room for a sandbox's ID.
func (r *Runtime) startSpare() (*monitorProc, error) {
	env := []string{monitor.EnvRoot + "=" + r.st.Root(), monitor.EnvSpare + "=1"}
	m, err := r.startMonitor([]string{monitorArg0, monitor.SpareArg}, env, "/", nil)
	if err != nil {
		return nil, fmt.Errorf("spare monitor: %w", err)
	}
	return m, nil
}

// claimSpare gives sandbox id a spare monitor, or returns nil when none is
// ready. A spare that exited meanwhile (killed by hand) is reaped and the
// next one tried.
func (r *Runtime) claimSpare(id string) *monitorProc {
	p := &r.spares
	for {
		p.mu.Lock()
		if len(p.idle) == 0 {
			p.mu.Unlock()
			return nil
		}
		m := p.idle[0]
		p.idle = p.idle[1:]
		p.mu.Unlock()
		err := m.claim(id)
		if err == nil {
			return m
		}
		r.log.Warn("a spare monitor is gone", "pid", m.ref.PID, "err", err)
		m.kill()
	}
}

// claim sends the spare monitor m its sandbox.
func (m *monitorProc) claim(id string) error {
	select {
	case <-m.done:
		return errors.New("it exited")
	default:
	}
	b, err := json.Marshal(monitor.Claim{ID: id, Log: monitorLogName})
	if err == nil {
		_, err = m.plan.Write(append(b, '\n'))
	}
	if err != nil {
		return fmt.Errorf("claim a spare monitor: %w", err)
	}
	return nil
}
