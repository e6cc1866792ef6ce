package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// withMachine locks sandbox id, checks that its VMM runs (or is paused, or
// orphaned), attaches to it with the runtime's logger and tracer provider
// and calls fn with the operation's context (which carries its span), then
// saves rec with the machine's new state.
func (r *Runtime) withMachine(ctx context.Context, id, op, spanName string, fn func(ctx context.Context, m *vmm.Machine, rec *record) (undoFunc, error)) (err error) {
	ctx, end := r.span(ctx, spanName, id)
	defer end(&err)

	l, err := r.st.Lock(ctx, id)
	if err != nil {
		return r.loadError(id, err)
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		return r.loadError(id, err)
	}
	switch st := r.reconcile(ctx, &rec); st {
	case Running, Paused, Orphaned:
		if rec.Machine == nil {
			return fmt.Errorf("%s sandbox %q: its monitor died while starting it, before recording the VMM, which runs on: stop it: %w", op, id, ErrInvalidState)
		}
	default:
		return fmt.Errorf("%s sandbox %q: it is %s: %w", op, id, st, ErrInvalidState)
	}
	m, err := vmm.Attach(ctx, *rec.Machine, r.vmmOptions()...)
	if err != nil {
		return fmt.Errorf("%s sandbox %q: %w", op, id, err)
	}
	defer m.Release()
	r.log.Debug("attached to VMM", "sandbox", id, "op", op, "pid", rec.Machine.PID)
	undo, err := fn(ctx, m, &rec)
	if err != nil {
		return fmt.Errorf("%s sandbox %q: %w", op, id, err)
	}
	state := m.State()
	rec.Machine = &state
	if err := l.Save(&rec); err != nil {
		// The VM changed but the record could not say so: undo the change,
		// so that the record (a paused VM shown running, a slot shown free
		// and handed out again) stays true.
		if undo != nil {
			if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w (the sandbox's record is out of date: stop it)", uerr))
			}
		}
		return fmt.Errorf("%s sandbox %q: %w", op, id, err)
	}
	return nil
}

// undoFunc undoes what an operation did to a VM, when its record cannot
// be saved.
type undoFunc func(ctx context.Context) error

// Pause pauses the sandbox's vCPUs.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	return r.withMachine(ctx, id, "pause", "sandbox.Pause", func(ctx context.Context, m *vmm.Machine, rec *record) (undoFunc, error) {
		if err := m.Pause(ctx); err != nil {
			return nil, err
		}
		rec.Status = Paused
		return m.Resume, nil
	})
}

// Resume resumes a paused sandbox.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	return r.withMachine(ctx, id, "resume", "sandbox.Resume", func(ctx context.Context, m *vmm.Machine, rec *record) (undoFunc, error) {
		if err := m.Resume(ctx); err != nil {
			return nil, err
		}
		rec.Status = Running
		return m.Pause, nil
	})
}

// Threads returns the host thread IDs of the sandbox's vCPUs, in vCPU order.
func (r *Runtime) Threads(ctx context.Context, id string) ([]int, error) {
	var tids []int
	err := r.withMachine(ctx, id, "list threads of", "sandbox.Threads", func(ctx context.Context, m *vmm.Machine, _ *record) (undoFunc, error) {
		var err error
		tids, err = m.VCPUThreads(ctx)
		return nil, err
	})
	return tids, err
}

// AttachDrive hot-plugs a drive into a free hotplug slot of the running
// sandbox and returns the slot's ID.
func (r *Runtime) AttachDrive(ctx context.Context, id string, d Disk) (string, error) {
	if err := absPath(&d.Path); err != nil {
		return "", specError(err)
	}
	var slot string
	err := r.withMachine(ctx, id, "attach a drive to", "sandbox.AttachDrive", func(ctx context.Context, m *vmm.Machine, _ *record) (undoFunc, error) {
		var err error
		slot, err = m.AttachDrive(ctx, vmm.Drive{Path: d.Path, ReadOnly: d.ReadOnly})
		if err != nil {
			return nil, err
		}
		s := slot
		return func(ctx context.Context) error { return m.DetachDrive(ctx, s) }, nil
	})
	if err != nil {
		slot = ""
	}
	return slot, err
}

// DetachDrive empties a hotplug slot of the running sandbox.
func (r *Runtime) DetachDrive(ctx context.Context, id, slot string) error {
	return r.withMachine(ctx, id, "detach a drive from", "sandbox.DetachDrive", func(ctx context.Context, m *vmm.Machine, _ *record) (undoFunc, error) {
		// Not undone: a slot the record shows holding a drive the VM no
		// longer has is never handed out, and detaching it again is
		// harmless.
		return nil, m.DetachDrive(ctx, slot)
	})
}

// monitorExitWait bounds how long a removal waits for a monitor that has
// recorded its VMM's exit to exit itself.
const monitorExitWait = 5 * time.Second

// awaitMonitorExit waits (briefly) for the monitor of an exited sandbox:
// once it has recorded the exit it only has to return, and removing the
// sandbox before then would leave its process behind.
func awaitMonitorExit(ctx context.Context, rec *record) {
	if rec.Status != Exited || rec.Monitor == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, monitorExitWait)
	defer cancel()
	waitGone(wctx, *rec.Monitor)
}

// GCOptions tune Collect.
type GCOptions struct {
	// KillOrphans kills the VMs gc finds running for sandboxes that cannot
	// be managed any more — whose state file is missing, corrupt or from a
	// newer kindling, or whose monitor is gone — and then removes those
	// sandboxes. Without it gc never ends a running VM: it reports them.
	KillOrphans bool
}

// GCReport says what Collect did and found.
type GCReport struct {
	// Removed are the sandboxes (and stale files) removed.
	Removed []string `json:"removed"`
	// Orphans are the sandboxes found with a VM (or monitor) still running
	// that their record does not account for; Killed says whether
	// KillOrphans ended them.
	Orphans []Orphan `json:"orphans,omitempty"`
	// Kept are sandboxes with nothing running that gc left alone, with
	// why (a newer kindling's state file).
	Kept []Orphan `json:"kept,omitempty"`
}

// Orphan is a sandbox gc found and did not simply collect.
type Orphan struct {
	ID     string `json:"id"`
	PIDs   []int  `json:"pids,omitempty"`
	Reason string `json:"reason"`
	Killed bool   `json:"killed,omitempty"`
}

// GC is Collect with the zero GCOptions; it returns the IDs removed.
func (r *Runtime) GC(ctx context.Context) ([]string, error) {
	rep, err := r.Collect(ctx, GCOptions{})
	return rep.Removed, err
}

// Collect removes every sandbox whose VMM is gone (exited, or never
// started by a create that crashed) and releases what they held: taps,
// sockets and files. Created sandboxes that were never started are kept.
// A sandbox whose record cannot be used (missing, corrupt, too new) is
// removed when nothing of it runs; when something does, it is reported as
// an orphan and left running, unless o.KillOrphans.
func (r *Runtime) Collect(ctx context.Context, o GCOptions) (rep GCReport, err error) {
	ctx, end := r.span(ctx, "sandbox.GC", "")
	defer end(&err)

	var errs []error
	// A directory without a state file is a crashed create, unless the
	// host shows processes in it (its state file was deleted under a
	// running VM): those are the next loop's.
	cleaned, err := r.st.CleanExcept(func(id string) bool {
		dir, _ := r.st.Dir(id)
		procs, _ := hostPIDs(dir)
		return len(procs) > 0
	})
	rep.Removed = append(rep.Removed, cleaned...)
	errs = append(errs, err)
	for _, p := range cleaned {
		errs = append(errs, r.removeCleanedCopyDir(p))
	}
	entries, err := r.st.List()
	if err != nil {
		return rep, errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		// A monitor that has recorded its VMM's exit is about to exit
		// itself: let it, so that removing the sandbox leaves no process.
		var seen record
		if r.st.Load(e.ID, &seen) == nil {
			awaitMonitorExit(ctx, &seen)
		}
		l, err := r.st.TryLock(e.ID)
		if err != nil {
			if !errors.Is(err, store.ErrLocked) && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, err)
			}
			continue // busy: another command works on it
		}
		removed, err := r.collectOne(ctx, l, o, &rep)
		l.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		if removed {
			rep.Removed = append(rep.Removed, e.ID)
		}
	}
	// A root left without sandboxes keeps nothing of its jails (shared
	// copies a crash left included); a root with any keeps them all.
	removeEmptyJailParents(r.st.Root())
	return rep, errors.Join(errs...)
}

// collectOne collects the sandbox locked by l, if it is to go, and
// reports whether it removed it.
func (r *Runtime) collectOne(ctx context.Context, l *store.Locked, o GCOptions, rep *GCReport) (bool, error) {
	id := l.ID()
	var rec record
	lerr := l.Load(&rec)
	if lerr != nil && !recordLost(lerr) {
		return false, lerr
	}
	orphan := func(reason string, procs []procRef) (bool, error) {
		or := Orphan{ID: id, Reason: reason}
		for _, p := range procs {
			or.PIDs = append(or.PIDs, p.PID)
		}
		if !o.KillOrphans {
			rep.Orphans = append(rep.Orphans, or)
			return false, nil
		}
		err := killAll(ctx, procs)
		or.Killed = err == nil
		rep.Orphans = append(rep.Orphans, or)
		return or.Killed, err
	}
	if lerr == nil {
		rec.dirID = id
		switch st := r.reconcile(ctx, &rec); st {
		case Exited:
		case Orphaned:
			procs, err := hostPIDs(l.Dir())
			if err != nil {
				return false, err
			}
			if ok, err := orphan("its monitor is gone and its VM runs on", procs); !ok || err != nil {
				return false, err
			}
			if err := r.settle(ctx, l, &rec); err != nil {
				return false, err
			}
		case Created:
			// A start that crashed while setting up the network left it
			// (the sandbox stays: it was never started).
			if !rec.NetActive {
				return false, nil
			}
			if err := releaseNetwork(ctx, &rec); err != nil {
				return false, err
			}
			return false, l.Save(&rec)
		default:
			return false, nil
		}
	} else {
		procs, err := hostPIDs(l.Dir())
		if err != nil {
			return false, err
		}
		reason := lerr.Error()
		if errors.Is(lerr, store.ErrNotFound) {
			reason = "its state file is missing"
		}
		if len(procs) > 0 {
			if ok, err := orphan(reason, procs); !ok || err != nil {
				return false, err
			}
		} else if errors.Is(lerr, store.ErrTooNew) {
			rep.Kept = append(rep.Kept, Orphan{ID: id, Reason: reason})
			return false, nil
		}
	}
	var errs []error
	if lerr == nil {
		errs = append(errs, releaseTaps(ctx, &rec))
		if err := releaseNetwork(ctx, &rec); err != nil {
			// Keep the record, which holds the network, for the next gc.
			return false, errors.Join(append(errs, err, l.Save(&rec))...)
		}
		errs = append(errs, r.releaseJail(l.Dir(), &rec))
	} else {
		errs = append(errs, r.releaseJail(l.Dir(), nil))
	}
	if err := l.Remove(); err != nil {
		return false, errors.Join(append(errs, err)...)
	}
	// The root's jail directories go at the end of Collect.
	return true, errors.Join(errs...)
}
