package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// PoolLabel marks a warm pool's clones: its value is the template's name.
// A claimed clone keeps it (labels are fixed at create).
const PoolLabel = "kindling.pool"

// defaultGuestMiB is the guest memory of a spec that gives none (the VMM
// driver's default), for the pools' budget.
const defaultGuestMiB = 128

// guestMiB is the guest memory a spec's MemoryMiB stands for.
func guestMiB(m int) int {
	if m <= 0 {
		return defaultGuestMiB
	}
	return m
}

// poolRetry is how long a pool waits after a failed fill before trying
// again.
const poolRetry = 2 * time.Second

// MaxPoolSize bounds a pool's size.
const MaxPoolSize = 1000

// poolsDir is where the server keeps the pools' settings, under the state
// root: one state file per template (internal/store).
const poolsDir = ".kindlingd-pools"

// poolSetting is a pool's stored settings.
type poolSetting struct {
	Template  string `json:"template"`
	Size      int    `json:"size"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
}

// PoolStatus describes a warm pool.
type PoolStatus struct {
	Template string
	// Size is how many paused clones the pool keeps ready; MemoryMiB
	// bounds their guest memory (0: no bound of the pool's own).
	Size, MemoryMiB int
	// Ready is how many it has; MemoryUsedMiB their guest memory.
	Ready, MemoryUsedMiB int
	// Hits and Misses count the creates from the template that claimed a
	// ready clone and those that found none, since the server started.
	Hits, Misses int64
	// Err is the last failure to fill the pool ("" after a success).
	Err string
}

// pool is one template's warm pool.
type pool struct {
	poolSetting
	ready []string // paused clones, oldest first
	// making are the IDs of clones being started and paused for the pool:
	// not a user's sandboxes either.
	making       []string
	used         int // MiB their guests hold
	hits, misses int64
	lastErr      string
	kick         chan struct{} // wakes the filler
	cancel       context.CancelFunc
	done         chan struct{} // closed when the filler has returned
}

// pools keeps, per template, clones started and paused ahead of need, so
// that a create claims one and only resumes it. Clones are sandboxes of
// the runtime like any other (labelled PoolLabel=<template>), so a
// restarted server re-adopts the paused ones it finds.
type pools struct {
	rt     *sandbox.Runtime
	tpl    *template.Store
	st     *store.Store // the settings; nil without a template store
	log    *slog.Logger
	budget int // MiB of guest memory all ready clones may hold; 0: no bound
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex // guards m and used
	m    map[string]*pool
	used int // MiB held by all ready clones

	readyGauge *prometheus.GaugeVec
	claims     *prometheus.CounterVec
}

// newPools starts the pools stored under the state root and those of
// sizes (the --pool flags), which are stored as a Set would.
func newPools(ctx context.Context, s *Server, sizes map[string]int, budget int) (*pools, error) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &pools{rt: s.rt, tpl: s.tpl, log: s.log, budget: budget, m: map[string]*pool{}, ctx: fctx, cancel: cancel}
	p.readyGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kindlingd_pool_ready", Help: "Paused clones ready in each template's warm pool.",
	}, []string{"template"})
	p.claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kindlingd_pool_claims_total", Help: "Creates from a template, by whether its warm pool had a clone (hit) or not (miss).",
	}, []string{"template", "result"})
	s.metrics.reg.MustRegister(p.readyGauge, p.claims)
	if s.tpl == nil {
		return p, nil
	}
	var err error
	if p.st, err = store.Open(filepath.Join(s.rt.Root(), poolsDir)); err != nil {
		cancel()
		return nil, fmt.Errorf("open the pools' settings: %w", err)
	}
	ids, err := p.st.List()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("list the pools' settings: %w", err)
	}
	settings := map[string]poolSetting{}
	for _, e := range ids {
		var ps poolSetting
		if err := p.st.Load(e.ID, &ps); err != nil {
			p.log.Warn("warm pool settings", "template", e.ID, "err", err)
			continue
		}
		settings[ps.Template] = ps
	}
	for name, n := range sizes {
		ps := settings[name]
		ps.Template, ps.Size = name, n
		if err := p.save(ps); err != nil {
			cancel()
			return nil, err
		}
		settings[name] = ps
	}
	for _, ps := range settings {
		p.start(ctx, ps)
	}
	return p, nil
}

// save stores a pool's settings.
func (p *pools) save(ps poolSetting) error {
	ctx := context.Background()
	err := p.st.Create(ctx, ps.Template, &ps)
	if errors.Is(err, store.ErrExists) {
		var old poolSetting
		err = p.st.Update(ctx, ps.Template, &old, func() error { old = ps; return nil })
	}
	if err != nil {
		return fmt.Errorf("pool %q: store its settings: %w", ps.Template, err)
	}
	return nil
}

// start adopts the paused clones a previous server left in pool ps and
// starts its filler.
func (p *pools) start(ctx context.Context, ps poolSetting) {
	pl := &pool{poolSetting: ps, kick: make(chan struct{}, 1), done: make(chan struct{})}
	infos, err := p.rt.List(ctx, sandbox.ListOptions{Labels: map[string]string{PoolLabel: ps.Template}})
	if err != nil {
		p.log.Warn("adopt pool", "template", ps.Template, "err", err)
	}
	p.mu.Lock()
	for _, in := range infos {
		if in.Status == sandbox.Paused {
			mib := guestMiB(in.Spec.MemoryMiB)
			pl.ready = append(pl.ready, in.ID)
			pl.used += mib
			p.used += mib
		}
	}
	var fctx context.Context
	fctx, pl.cancel = context.WithCancel(p.ctx)
	p.m[ps.Template] = pl
	n := len(pl.ready)
	p.mu.Unlock()
	p.readyGauge.WithLabelValues(ps.Template).Set(float64(n))
	go p.fill(fctx, pl)
}

// fill keeps pool pl full, within the memory budgets, until ctx ends.
func (p *pools) fill(ctx context.Context, pl *pool) {
	defer close(pl.done)
	for {
		err := p.fillOnce(ctx, pl)
		p.mu.Lock()
		prev := pl.lastErr
		pl.lastErr = ""
		if err != nil && ctx.Err() == nil {
			pl.lastErr = err.Error()
		}
		p.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			// Logged when it changes, not at every retry (a removed
			// template fails the same way until the pool is deleted).
			if err.Error() != prev {
				p.log.Warn("warm pool", "template", pl.Template, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(poolRetry):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-pl.kick:
		}
	}
}

// fillOnce adds clones until the pool is full or a budget is spent.
func (p *pools) fillOnce(ctx context.Context, pl *pool) error {
	tpl, err := p.tpl.Inspect(ctx, pl.Template)
	if err != nil {
		return err
	}
	mib := guestMiB(tpl.MemoryMiB)
	for ctx.Err() == nil {
		p.mu.Lock()
		full := len(pl.ready) >= pl.Size
		over := (p.budget > 0 && p.used+mib > p.budget) || (pl.MemoryMiB > 0 && pl.used+mib > pl.MemoryMiB)
		if !full && !over {
			// Reserved while the clone starts.
			p.used += mib
			pl.used += mib
		}
		p.mu.Unlock()
		if full || over {
			return nil
		}
		// Its ID is chosen here, so that the clone is known as the pool's
		// from its first moment.
		id := sandbox.NewID()
		p.mu.Lock()
		pl.making = append(pl.making, id)
		p.mu.Unlock()
		err := p.addClone(ctx, pl.Template, id)
		p.mu.Lock()
		pl.making = slices.DeleteFunc(pl.making, func(m string) bool { return m == id })
		if err == nil && ctx.Err() == nil {
			pl.ready = append(pl.ready, id)
		} else {
			p.used -= mib
			pl.used -= mib
		}
		n := len(pl.ready)
		p.mu.Unlock()
		if err == nil && ctx.Err() != nil {
			// The pool was deleted meanwhile.
			return p.rt.Remove(context.WithoutCancel(ctx), id, true)
		}
		p.readyGauge.WithLabelValues(pl.Template).Set(float64(n))
		if err != nil {
			return err
		}
	}
	return nil
}

// addClone starts clone id of template name and pauses it.
func (p *pools) addClone(ctx context.Context, name, id string) error {
	if _, err := p.tpl.Run(ctx, name, template.CloneOptions{ID: id, Labels: map[string]string{PoolLabel: name}}); err != nil {
		return fmt.Errorf("start a clone: %w", err)
	}
	if err := p.rt.Pause(ctx, id); err != nil {
		return errors.Join(fmt.Errorf("pause clone %s: %w", id, err), p.rt.Remove(context.WithoutCancel(ctx), id, true))
	}
	return nil
}

// take removes the oldest ready clone of pl from the pool (its memory is
// released once its size is known). The caller holds p.mu.
func (p *pools) take(pl *pool) (string, bool) {
	if len(pl.ready) == 0 {
		return "", false
	}
	id := pl.ready[0]
	pl.ready = pl.ready[1:]
	return id, true
}

// claim takes a ready clone of template name and resumes it; ok is false
// when the pool had none (a miss: the caller clones as usual). prepare,
// when not nil, is done to the clone before it resumes; when it fails the
// clone is removed and its error returned.
func (p *pools) claim(ctx context.Context, name string, prepare func(context.Context, string) error) (sandbox.Info, bool, error) {
	for {
		p.mu.Lock()
		pl := p.m[name]
		if pl == nil {
			p.mu.Unlock()
			return sandbox.Info{}, false, nil
		}
		id, ok := p.take(pl)
		if !ok {
			pl.misses++
			p.mu.Unlock()
			p.claims.WithLabelValues(name, "miss").Inc()
			return sandbox.Info{}, false, nil
		}
		n := len(pl.ready)
		p.mu.Unlock()
		p.readyGauge.WithLabelValues(name).Set(float64(n))
		select {
		case pl.kick <- struct{}{}:
		default:
		}
		in, err := p.rt.Inspect(ctx, id)
		if err == nil {
			p.release(pl, guestMiB(in.Spec.MemoryMiB))
			if prepare != nil {
				if err := prepare(ctx, id); err != nil {
					// The clone is the caller's now: it is not put back.
					rmErr := p.rt.Remove(context.WithoutCancel(ctx), id, true)
					return sandbox.Info{}, false, errors.Join(err, rmErr)
				}
			}
			if err = p.rt.Resume(ctx, id); err == nil {
				in.Status = sandbox.Running
				p.mu.Lock()
				pl.hits++
				p.mu.Unlock()
				p.claims.WithLabelValues(name, "hit").Inc()
				return in, true, nil
			}
		}
		// Gone or broken meanwhile: drop it and try the next.
		p.log.Warn("warm pool: a clone could not be claimed", "template", name, "sandbox", id, "err", err)
		_ = p.rt.Remove(context.WithoutCancel(ctx), id, true)
	}
}

func (p *pools) release(pl *pool, mib int) {
	p.mu.Lock()
	p.used = max(p.used-mib, 0)
	pl.used = max(pl.used-mib, 0)
	p.mu.Unlock()
}

// set creates pool name or changes its settings, and stores them. Ready
// clones beyond a smaller size or budget are removed.
func (p *pools) set(ctx context.Context, ps poolSetting) (PoolStatus, error) {
	if p.st == nil {
		return PoolStatus{}, fmt.Errorf("warm pools need the template store: %w", sandbox.ErrNotSupported)
	}
	if ps.Size < 0 || ps.Size > MaxPoolSize {
		return PoolStatus{}, fmt.Errorf("pool %q: size %d: give 0 to %d: %w", ps.Template, ps.Size, MaxPoolSize, sandbox.ErrInvalid)
	}
	if ps.MemoryMiB < 0 {
		return PoolStatus{}, fmt.Errorf("pool %q: memory budget %d MiB: give 0 (none) or more: %w", ps.Template, ps.MemoryMiB, sandbox.ErrInvalid)
	}
	tpl, err := p.tpl.Inspect(ctx, ps.Template)
	if err != nil {
		return PoolStatus{}, err // it names the template
	}
	if err := p.save(ps); err != nil {
		return PoolStatus{}, err
	}
	p.mu.Lock()
	pl := p.m[ps.Template]
	if pl == nil {
		p.mu.Unlock()
		p.start(ctx, ps)
		return p.status(ps.Template)
	}
	pl.poolSetting = ps
	mib := guestMiB(tpl.MemoryMiB)
	var drop []string
	for len(pl.ready) > ps.Size || (ps.MemoryMiB > 0 && pl.used > ps.MemoryMiB && len(pl.ready) > 0) {
		id := pl.ready[len(pl.ready)-1]
		pl.ready = pl.ready[:len(pl.ready)-1]
		pl.used = max(pl.used-mib, 0)
		p.used = max(p.used-mib, 0)
		drop = append(drop, id)
	}
	n := len(pl.ready)
	p.mu.Unlock()
	p.readyGauge.WithLabelValues(ps.Template).Set(float64(n))
	for _, id := range drop {
		if err := p.rt.Remove(context.WithoutCancel(ctx), id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			p.log.Warn("warm pool: remove a clone beyond the size", "template", ps.Template, "sandbox", id, "err", err)
		}
	}
	select {
	case pl.kick <- struct{}{}:
	default:
	}
	return p.status(ps.Template)
}

// remove ends pool name: its filler stops, its ready clones are removed
// and its settings forgotten.
func (p *pools) remove(ctx context.Context, name string) error {
	p.mu.Lock()
	pl := p.m[name]
	delete(p.m, name)
	p.mu.Unlock()
	if pl == nil {
		return fmt.Errorf("pool %q: %w", name, sandbox.ErrNotFound)
	}
	pl.cancel()
	<-pl.done
	p.mu.Lock()
	ready := pl.ready
	pl.ready = nil
	p.used = max(p.used-pl.used, 0)
	p.mu.Unlock()
	p.readyGauge.DeleteLabelValues(name)
	var errs []error
	for _, id := range ready {
		if err := p.rt.Remove(context.WithoutCancel(ctx), id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if err := p.st.Remove(context.WithoutCancel(ctx), name); err != nil && !errors.Is(err, store.ErrNotFound) {
		errs = append(errs, fmt.Errorf("pool %q: forget its settings: %w", name, err))
	}
	return errors.Join(errs...)
}

// status describes pool name.
func (p *pools) status(name string) (PoolStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.m[name]
	if pl == nil {
		return PoolStatus{}, fmt.Errorf("pool %q: %w", name, sandbox.ErrNotFound)
	}
	return pl.status(), nil
}

func (pl *pool) status() PoolStatus {
	return PoolStatus{Template: pl.Template, Size: pl.Size, MemoryMiB: pl.MemoryMiB, Ready: len(pl.ready),
		MemoryUsedMiB: pl.used, Hits: pl.hits, Misses: pl.misses, Err: pl.lastErr}
}

// list describes every pool, by template name, and the memory all their
// ready clones hold.
func (p *pools) list() ([]PoolStatus, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PoolStatus, 0, len(p.m))
	for _, pl := range p.m {
		out = append(out, pl.status())
	}
	slices.SortFunc(out, func(a, b PoolStatus) int {
		if a.Template < b.Template {
			return -1
		}
		if a.Template > b.Template {
			return 1
		}
		return 0
	})
	return out, p.used
}

// close stops the fillers; the ready clones stay paused for the next
// server to adopt.
func (p *pools) close() {
	p.cancel()
	p.mu.Lock()
	var dones []chan struct{}
	for _, pl := range p.m {
		dones = append(dones, pl.done)
	}
	p.mu.Unlock()
	for _, d := range dones {
		<-d
	}
}

// isReady reports whether sandbox id is a ready clone of a pool (not yet
// claimed) or one being made for it: it is not shown as a user's sandbox
// by the E2B API.
func (p *pools) isReady(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pl := range p.m {
		if slices.Contains(pl.ready, id) || slices.Contains(pl.making, id) {
			return true
		}
	}
	return false
}
