package sandbox

import (
	"sync"
	"sync/atomic"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// procWatch answers whether the processes records name (monitors, VMMs)
// still run, through a pidfd per process kept open while it runs: a check
// is then one poll of the pidfd instead of a read and parse of
// /proc/PID/stat. A pidfd names its process for good, so a recycled PID
// cannot fool it; it is opened once, checked against the recorded start
// time, and closed as soon as the process exits (a goroutine waits on
// it), so that nothing is held for processes that are gone. Safe for
// concurrent use.
type procWatch struct {
	mu sync.Mutex // guards m
	m  map[procRef]*watchedProc
}

// watchedProc is a running process and its pidfd.
type watchedProc struct {
	pfd  *kunix.Pidfd
	gone atomic.Bool // seen exited: final
}

// alive reports whether p still runs (zombies count as gone) and is the
// very process recorded, not a recycled PID: at the moment of the call,
// so a process killed just before is seen gone.
func (r *Runtime) alive(p procRef) bool {
	if p.PID <= 0 {
		return false
	}
	w := &r.procs
	w.mu.Lock()
	wp := w.m[p]
	w.mu.Unlock()
	if wp == nil {
		var ok bool
		if wp, ok = w.watch(p); wp == nil {
			return ok
		}
	}
	if wp.gone.Load() {
		return false
	}
	exited, err := wp.pfd.Exited()
	switch {
	case err != nil: // closed meanwhile (see watch)
		return aliveProc(p)
	case exited:
		wp.gone.Store(true)
		return false
	}
	return true
}

// watch opens a pidfd for p and keeps it while the process runs. It
// returns the watch, or nil and whether p runs: a process that is gone
// (or was never p) gets no watch, and where pidfds cannot be had (an old
// kernel, no descriptors left) /proc answers.
func (w *procWatch) watch(p procRef) (*watchedProc, bool) {
	pfd, err := kunix.OpenPidfd(p.PID)
	if err != nil {
		if kunix.IsNoProcess(err) {
			return nil, false
		}
		return nil, aliveProc(p)
	}
	// The pidfd names the process that had the PID when it was opened; if
	// that is still the one recorded now, it is p.
	if !aliveProc(p) {
		pfd.Close()
		return nil, false
	}
	wp := &watchedProc{pfd: pfd}
	w.mu.Lock()
	if had := w.m[p]; had != nil {
		w.mu.Unlock()
		pfd.Close()
		return had, true
	}
	if w.m == nil {
		w.m = map[procRef]*watchedProc{}
	}
	w.m[p] = wp
	w.mu.Unlock()
	go func() {
		if err := wp.pfd.Wait(); err == nil { // the process exited
			wp.gone.Store(true)
		}
		w.mu.Lock()
		if w.m[p] == wp {
			delete(w.m, p)
		}
		w.mu.Unlock()
		wp.pfd.Close()
	}()
	return wp, true
}

// aliveProc is alive's answer from /proc/PID/stat.
func aliveProc(p procRef) bool {
	if p.PID <= 0 {
		return false
	}
	st, state, err := kunix.ProcessStartAndState(p.PID)
	return err == nil && st == p.StartTime && state != 'Z' && state != 'X'
}
