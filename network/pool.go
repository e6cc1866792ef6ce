package network

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Pool keeps slots made ahead of time, so a sandbox (a clone above all)
// claims one in microseconds instead of building a namespace, a veth, a tap
// and NAT rules on its start path. It lives in one long-lived process (the
// server, a benchmark); what it holds is destroyed by Close, and by Leaks
// and Slots.Destroy after a crash.
type Pool struct {
	slots Slots
	size  int

	mu      sync.Mutex // guards free, closed, filling
	free    []*SlotRecord
	closed  bool
	filling bool
	wg      sync.WaitGroup // background refills
	done    chan struct{}  // closed by Close
}

// refillDelay is how long a refill waits after a claim: the claimer's
// start (tagging the slot, spawning the VMM) goes first, rather than
// queue behind the refill's netlink work on the kernel's RTNL lock.
const refillDelay = 20 * time.Millisecond

// NewPool returns an empty pool that keeps size slots ready; call Fill to
// make them.
func NewPool(slots Slots, size int) (*Pool, error) {
	if err := slots.Validate(); err != nil {
		return nil, err
	}
	if size < 1 || size > slots.Capacity() {
		return nil, invalid("pool size", fmt.Sprint(size), fmt.Sprintf("want 1–%d", slots.Capacity()))
	}
	return &Pool{slots: slots, size: size, done: make(chan struct{})}, nil
}

// Fill makes slots until the pool holds its size, and returns the first
// error.
func (p *Pool) Fill(ctx context.Context) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return fmt.Errorf("fill slot pool: closed: %w", ErrConflict)
		}
		if len(p.free) >= p.size {
			p.mu.Unlock()
			return nil
		}
		p.mu.Unlock()
		rec, err := p.slots.Create(ctx)
		if err != nil {
			return fmt.Errorf("fill slot pool: %w", err)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return errors.Join(fmt.Errorf("fill slot pool: closed: %w", ErrConflict), p.slots.Destroy(ctx, rec))
		}
		p.free = append(p.free, rec)
		p.mu.Unlock()
	}
}

// Ready returns how many slots are waiting.
func (p *Pool) Ready() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// Claim hands out a ready slot, or makes one if none is ready, and starts
// a background refill. The caller owns the slot and gives it back with
// Release.
func (p *Pool) Claim(ctx context.Context) (*SlotRecord, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("claim slot: pool closed: %w", ErrConflict)
	}
	var rec *SlotRecord
	if n := len(p.free); n > 0 {
		rec = p.free[n-1]
		p.free = p.free[:n-1]
	}
	if !p.filling {
		p.filling = true
		p.wg.Add(1)
		go p.refill()
	}
	p.mu.Unlock()
	if rec != nil {
		return rec, nil
	}
	return p.slots.Create(ctx)
}

// refill runs Fill in the background after refillDelay; errors leave the
// pool short and are seen by the next Claim making its slot itself.
func (p *Pool) refill() {
	defer p.wg.Done()
	t := time.NewTimer(refillDelay)
	defer t.Stop()
	select {
	case <-t.C:
		_ = p.Fill(context.Background())
	case <-p.done:
	}
	p.mu.Lock()
	p.filling = false
	p.mu.Unlock()
}

// Release destroys a slot that was claimed. A used slot is not put back:
// its conntrack entries, neighbour caches and whatever the sandbox left are
// not worth scrubbing when a fresh one is cheap to make off the start path.
func (p *Pool) Release(ctx context.Context, rec *SlotRecord) error {
	return p.slots.Destroy(ctx, rec)
}

// Close destroys the ready slots and waits for a refill in progress. Slots
// claimed and not released are the claimers'.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		close(p.done)
	}
	p.closed = true
	free := p.free
	p.free = nil
	p.mu.Unlock()
	p.wg.Wait()
	var errs []error
	for _, rec := range free {
		if err := p.slots.Destroy(ctx, rec); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Host is the host namespace the pool's slots hang off.
func (p *Pool) Host() Host { return p.slots.Host }
