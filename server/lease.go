package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
)

// leasesDir is where the server keeps its leases, under the state root.
const leasesDir = ".kindlingd"

// What a lease does when it ends.
const (
	onTimeoutKill  = "kill"
	onTimeoutPause = "pause"
)

// lease is what the server alone knows about a sandbox: its lifetime and,
// for a sandbox made through the E2B API, the template it came from and
// the access token its agent was given. It is stored as a versioned state
// file (internal/store) named by the sandbox's ID.
type lease struct {
	ID string `json:"id"`
	// EndAt is when the sandbox's lifetime ends; zero for none.
	EndAt time.Time `json:"end_at,omitzero"`
	// OnTimeout is what happens then: onTimeoutKill (kill and remove) or
	// onTimeoutPause.
	OnTimeout string `json:"on_timeout,omitempty"`
	// Template is the template an E2B sandbox was cloned from.
	Template string `json:"template,omitempty"`
	// AccessToken is the envd access token the sandbox's agent requires.
	AccessToken string `json:"access_token,omitempty"`
	// E2B marks a sandbox made through the E2B API.
	E2B bool `json:"e2b,omitempty"`
	// Metadata is an E2B sandbox's metadata (kept here, not as labels: a
	// clone claimed from a warm pool has its labels already).
	Metadata  map[string]string `json:"metadata,omitempty"`
	StartedAt time.Time         `json:"started_at,omitzero"`
}

// leases keeps the leases on disk and their timers in memory.
type leases struct {
	st  *store.Store
	rt  *sandbox.Runtime
	log *slog.Logger
	now func() time.Time
	// onExpire, if set, learns of each lease end: its action and error.
	onExpire func(action string, err error)

	mu sync.Mutex // guards timers and closed
	// timers are the armed lease ends, by sandbox ID.
	timers map[string]*time.Timer
	closed bool
	wg     sync.WaitGroup // the expiries running

	cacheMu sync.Mutex // guards cache
	cache   map[string]cachedLease
}

func openLeases(rt *sandbox.Runtime, log *slog.Logger) (*leases, error) {
	st, err := store.Open(filepath.Join(rt.Root(), leasesDir))
	if err != nil {
		return nil, fmt.Errorf("open the server's leases: %w", err)
	}
	return &leases{st: st, rt: rt, log: log, now: time.Now, timers: map[string]*time.Timer{}, cache: map[string]cachedLease{}}, nil
}

// get returns sandbox id's lease, the zero lease (with the ID) when it has
// none.
// A lease read from disk is kept while its state file is unchanged (it is
// replaced whole on every save, so its inode, size and time tell), so that
// describing many sandboxes costs a stat each, not a read and a decode.
// Callers must not change the lease's Metadata map.
func (ls *leases) get(id string) (lease, error) {
	if store.ValidateID(id) != nil {
		return lease{ID: id}, nil
	}
	stamp, serr := leaseStamp(filepath.Join(ls.st.Root(), id, leaseFileName))
	if errors.Is(serr, os.ErrNotExist) {
		ls.forget(id)
		return lease{ID: id}, nil
	}
	ls.cacheMu.Lock()
	c, ok := ls.cache[id]
	ls.cacheMu.Unlock()
	if ok && serr == nil && c.stamp == stamp {
		return c.l, nil
	}
	var l lease
	err := ls.st.Load(id, &l)
	if errors.Is(err, store.ErrNotFound) {
		ls.forget(id)
		return lease{ID: id}, nil
	}
	if err != nil {
		return lease{}, err
	}
	if serr == nil {
		ls.cacheMu.Lock()
		ls.cache[id] = cachedLease{stamp: stamp, l: l}
		ls.cacheMu.Unlock()
	}
	return l, nil
}

// leaseFileName is the store's state file in a lease's directory.
const leaseFileName = "state.json"

// fileStamp tells one version of a file from another.
type fileStamp struct {
	ino, size uint64
	mtime     int64
}

func leaseStamp(path string) (fileStamp, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileStamp{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fileStamp{ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim.Nano()}, nil
}

type cachedLease struct {
	stamp fileStamp
	l     lease
}

func (ls *leases) forget(id string) {
	ls.cacheMu.Lock()
	delete(ls.cache, id)
	ls.cacheMu.Unlock()
}

// put records l and (re-)arms its timer.
func (ls *leases) put(ctx context.Context, l lease) error {
	err := ls.st.Create(ctx, l.ID, &l)
	if errors.Is(err, store.ErrExists) {
		var old lease
		err = ls.st.Update(ctx, l.ID, &old, func() error { old = l; return nil })
	}
	if err != nil {
		return fmt.Errorf("record the lease of sandbox %q: %w", l.ID, err)
	}
	ls.arm(l)
	return nil
}

// drop forgets sandbox id's lease.
func (ls *leases) drop(ctx context.Context, id string) error {
	ls.disarm(id)
	err := ls.st.Remove(ctx, id)
	ls.forget(id)
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalidID) {
		return fmt.Errorf("drop the lease of sandbox %q: %w", id, err)
	}
	return nil
}

// arm sets l's timer (or clears it for a lease without an end).
func (ls *leases) arm(l lease) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if t := ls.timers[l.ID]; t != nil {
		t.Stop()
		delete(ls.timers, l.ID)
	}
	if ls.closed || l.EndAt.IsZero() {
		return
	}
	id := l.ID
	ls.timers[id] = time.AfterFunc(max(l.EndAt.Sub(ls.now()), 0), func() { ls.expire(id) })
}

func (ls *leases) disarm(id string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if t := ls.timers[id]; t != nil {
		t.Stop()
		delete(ls.timers, id)
	}
}

// expireTimeout bounds what an expiry does (a kill, a pause).
const expireTimeout = 30 * time.Second

// expire ends sandbox id's lifetime as its lease says, if the lease still
// ends now (it may have been extended since the timer fired).
func (ls *leases) expire(id string) {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	delete(ls.timers, id)
	ls.wg.Add(1)
	ls.mu.Unlock()
	defer ls.wg.Done()

	ctx, cancel := context.WithTimeout(context.Background(), expireTimeout)
	defer cancel()
	l, err := ls.get(id)
	if err != nil {
		ls.log.Error("lease expiry: read lease", "sandbox", id, "err", err)
		return
	}
	if l.EndAt.IsZero() {
		return
	}
	if d := l.EndAt.Sub(ls.now()); d > 0 {
		ls.arm(l) // extended meanwhile
		return
	}
	switch l.OnTimeout {
	case onTimeoutPause:
		err = ls.rt.Pause(ctx, id)
		if err == nil || errors.Is(err, sandbox.ErrConflict) {
			// Paused (or not running: nothing to pause); the lease stays
			// without an end until a resume sets a new one.
			l.EndAt = time.Time{}
			err = errors.Join(err, ls.put(ctx, l))
		}
	default:
		err = ls.rt.Remove(ctx, id, true)
		if err == nil || errors.Is(err, sandbox.ErrNotFound) {
			err = ls.drop(ctx, id)
		}
	}
	if ls.onExpire != nil {
		ls.onExpire(l.OnTimeout, err)
	}
	if err != nil {
		ls.log.Error("lease expiry", "sandbox", id, "action", l.OnTimeout, "err", err)
		return
	}
	ls.log.Info("lease ended", "sandbox", id, "action", l.OnTimeout)
}

// adopt loads every stored lease on start: leases of sandboxes that no
// longer exist are dropped, the others re-armed (an end already past fires
// at once).
func (ls *leases) adopt(ctx context.Context) (int, error) {
	ents, err := ls.st.List()
	if err != nil {
		return 0, fmt.Errorf("list leases: %w", err)
	}
	if _, err := ls.st.Clean(); err != nil {
		ls.log.Warn("clean leases", "err", err)
	}
	n := 0
	for _, e := range ents {
		if e.Incomplete {
			continue
		}
		if _, err := ls.rt.Inspect(ctx, e.ID); errors.Is(err, sandbox.ErrNotFound) {
			if err := ls.drop(ctx, e.ID); err != nil {
				ls.log.Warn("drop a stale lease", "sandbox", e.ID, "err", err)
			}
			continue
		}
		l, err := ls.get(e.ID)
		if err != nil {
			ls.log.Warn("read a lease", "sandbox", e.ID, "err", err)
			continue
		}
		ls.arm(l)
		n++
	}
	return n, nil
}

// armed returns how many lease ends are armed.
func (ls *leases) armed() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.timers)
}

// close stops every timer and waits for the expiries running.
func (ls *leases) close() {
	ls.mu.Lock()
	ls.closed = true
	for id, t := range ls.timers {
		t.Stop()
		delete(ls.timers, id)
	}
	ls.mu.Unlock()
	ls.wg.Wait()
}
