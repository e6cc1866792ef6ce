package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// pools keeps, per template, clones started and paused ahead of need, so
// that a create claims one and only resumes it. Clones are sandboxes of
// the runtime like any other (labelled PoolLabel=<template>), so a
// restarted server re-adopts the paused ones it finds.
type pools struct {
	rt     *sandbox.Runtime
	tpl    *template.Store
	log    *slog.Logger
	sizes  map[string]int // wanted ready clones by template
	budget int            // MiB of guest memory all ready clones may hold; 0: no bound

	mu    sync.Mutex // guards ready and used
	ready map[string][]string
	used  int // MiB held by ready clones

	kick   map[string]chan struct{} // wakes a template's filler
	cancel context.CancelFunc
	wg     sync.WaitGroup

	readyGauge *prometheus.GaugeVec
	claims     *prometheus.CounterVec
}

func newPools(ctx context.Context, s *Server, sizes map[string]int, budget int) *pools {
	p := &pools{rt: s.rt, tpl: s.tpl, log: s.log, sizes: sizes, budget: budget,
		ready: map[string][]string{}, kick: map[string]chan struct{}{}}
	p.readyGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kindlingd_pool_ready", Help: "Paused clones ready in each template's warm pool.",
	}, []string{"template"})
	p.claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kindlingd_pool_claims_total", Help: "Creates from a template, by whether its warm pool had a clone (hit) or not (miss).",
	}, []string{"template", "result"})
	s.metrics.reg.MustRegister(p.readyGauge, p.claims)
	if len(sizes) == 0 || s.tpl == nil {
		return p
	}
	p.adopt(ctx)
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	for name := range sizes {
		p.kick[name] = make(chan struct{}, 1)
		p.wg.Add(1)
		go p.fill(fctx, name)
	}
	return p
}

// adopt takes the paused clones a previous server left in the pools.
func (p *pools) adopt(ctx context.Context) {
	for name := range p.sizes {
		infos, err := p.rt.List(ctx, sandbox.ListOptions{Labels: map[string]string{PoolLabel: name}})
		if err != nil {
			p.log.Warn("adopt pool", "template", name, "err", err)
			continue
		}
		for _, in := range infos {
			if in.Status == sandbox.Paused {
				p.mu.Lock()
				p.ready[name] = append(p.ready[name], in.ID)
				p.used += guestMiB(in.Spec.MemoryMiB)
				p.mu.Unlock()
			}
		}
		p.readyGauge.WithLabelValues(name).Set(float64(len(p.ready[name])))
	}
}

// fill keeps template name's pool full, within the memory budget, until
// ctx ends.
func (p *pools) fill(ctx context.Context, name string) {
	defer p.wg.Done()
	for {
		if err := p.fillOnce(ctx, name); err != nil && ctx.Err() == nil {
			p.log.Warn("warm pool", "template", name, "err", err)
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
		case <-p.kick[name]:
		}
	}
}

// fillOnce adds clones until the pool is full or the budget is spent.
func (p *pools) fillOnce(ctx context.Context, name string) error {
	tpl, err := p.tpl.Inspect(ctx, name)
	if err != nil {
		return err
	}
	mib := guestMiB(tpl.MemoryMiB)
	for ctx.Err() == nil {
		p.mu.Lock()
		full := len(p.ready[name]) >= p.sizes[name]
		over := p.budget > 0 && p.used+mib > p.budget
		if !full && !over {
			p.used += mib // reserved while the clone starts
		}
		p.mu.Unlock()
		if full || over {
			return nil
		}
		id, err := p.addClone(ctx, name)
		p.mu.Lock()
		if err != nil {
			p.used -= mib
		} else {
			p.ready[name] = append(p.ready[name], id)
		}
		n := len(p.ready[name])
		p.mu.Unlock()
		p.readyGauge.WithLabelValues(name).Set(float64(n))
		if err != nil {
			return err
		}
	}
	return nil
}

// addClone starts a clone of template name and pauses it.
func (p *pools) addClone(ctx context.Context, name string) (string, error) {
	in, err := p.tpl.Run(ctx, name, template.CloneOptions{Labels: map[string]string{PoolLabel: name}})
	if err != nil {
		return "", fmt.Errorf("start a clone: %w", err)
	}
	if err := p.rt.Pause(ctx, in.ID); err != nil {
		return "", errors.Join(fmt.Errorf("pause clone %s: %w", in.ID, err), p.rt.Remove(context.WithoutCancel(ctx), in.ID, true))
	}
	return in.ID, nil
}

// claim takes a ready clone of template name and resumes it; ok is false
// when the pool had none (a miss: the caller clones as usual).
func (p *pools) claim(ctx context.Context, name string) (sandbox.Info, bool) {
	for {
		p.mu.Lock()
		ids := p.ready[name]
		if len(ids) == 0 {
			p.mu.Unlock()
			if _, pooled := p.sizes[name]; pooled {
				p.claims.WithLabelValues(name, "miss").Inc()
			}
			return sandbox.Info{}, false
		}
		id := ids[0]
		p.ready[name] = ids[1:]
		n := len(p.ready[name])
		p.mu.Unlock()
		p.readyGauge.WithLabelValues(name).Set(float64(n))
		if ch := p.kick[name]; ch != nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		in, err := p.rt.Inspect(ctx, id)
		if err == nil {
			p.release(guestMiB(in.Spec.MemoryMiB))
			if err = p.rt.Resume(ctx, id); err == nil {
				in.Status = sandbox.Running
				p.claims.WithLabelValues(name, "hit").Inc()
				return in, true
			}
		}
		// Gone or broken meanwhile: drop it and try the next.
		p.log.Warn("warm pool: a clone could not be claimed", "template", name, "sandbox", id, "err", err)
		_ = p.rt.Remove(context.WithoutCancel(ctx), id, true)
	}
}

func (p *pools) release(mib int) {
	p.mu.Lock()
	p.used = max(p.used-mib, 0)
	p.mu.Unlock()
}

// close stops the fillers; the ready clones stay paused for the next
// server to adopt.
func (p *pools) close() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
}

// isReady reports whether sandbox id is a ready clone of a pool (not yet
// claimed): it is not shown as a user's sandbox by the E2B API.
func (p *pools) isReady(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ids := range p.ready {
		for _, r := range ids {
			if r == id {
				return true
			}
		}
	}
	return false
}
