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
func (r *Runtime) withMachine(ctx context.Context, id, op, spanName string, fn func(ctx context.Context, m *vmm.Machine, rec *record) error) (err error) {
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
	default:
		return fmt.Errorf("%s sandbox %q: it is %s: %w", op, id, st, ErrInvalidState)
	}
	m, err := vmm.Attach(ctx, *rec.Machine, r.vmmOptions()...)
	if err != nil {
		return fmt.Errorf("%s sandbox %q: %w", op, id, err)
	}
	defer m.Release()
	r.log.Debug("attached to VMM", "sandbox", id, "op", op, "pid", rec.Machine.PID)
	if err := fn(ctx, m, &rec); err != nil {
		return fmt.Errorf("%s sandbox %q: %w", op, id, err)
	}
	state := m.State()
	rec.Machine = &state
	if err := l.Save(&rec); err != nil {
		return fmt.Errorf("%s sandbox %q: %w", op, id, err)
	}
	return nil
}

// Pause pauses the sandbox's vCPUs.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	return r.withMachine(ctx, id, "pause", "sandbox.Pause", func(ctx context.Context, m *vmm.Machine, rec *record) error {
		if err := m.Pause(ctx); err != nil {
			return err
		}
		rec.Status = Paused
		return nil
	})
}

// Resume resumes a paused sandbox.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	return r.withMachine(ctx, id, "resume", "sandbox.Resume", func(ctx context.Context, m *vmm.Machine, rec *record) error {
		if err := m.Resume(ctx); err != nil {
			return err
		}
		rec.Status = Running
		return nil
	})
}

// Threads returns the host thread IDs of the sandbox's vCPUs, in vCPU order.
func (r *Runtime) Threads(ctx context.Context, id string) ([]int, error) {
	var tids []int
	err := r.withMachine(ctx, id, "list threads of", "sandbox.Threads", func(ctx context.Context, m *vmm.Machine, _ *record) error {
		var err error
		tids, err = m.VCPUThreads(ctx)
		return err
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
	err := r.withMachine(ctx, id, "attach a drive to", "sandbox.AttachDrive", func(ctx context.Context, m *vmm.Machine, _ *record) error {
		var err error
		slot, err = m.AttachDrive(ctx, vmm.Drive{Path: d.Path, ReadOnly: d.ReadOnly})
		return err
	})
	return slot, err
}

// DetachDrive empties a hotplug slot of the running sandbox.
func (r *Runtime) DetachDrive(ctx context.Context, id, slot string) error {
	return r.withMachine(ctx, id, "detach a drive from", "sandbox.DetachDrive", func(ctx context.Context, m *vmm.Machine, _ *record) error {
		return m.DetachDrive(ctx, slot)
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

// GC removes every sandbox whose VMM is gone (exited, or never started by
// a create that crashed) and releases what they held: taps, sockets and
// files. Created sandboxes that were never started are kept. A sandbox
// whose state file is corrupt cannot be managed any more: its processes
// are killed and it is removed. It returns the IDs it removed.
func (r *Runtime) GC(ctx context.Context) (_ []string, err error) {
	ctx, end := r.span(ctx, "sandbox.GC", "")
	defer end(&err)

	var removed []string
	var errs []error
	cleaned, err := r.st.Clean()
	removed = append(removed, cleaned...)
	errs = append(errs, err)
	entries, err := r.st.List()
	if err != nil {
		return removed, errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		if e.Incomplete {
			continue
		}
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
		var rec record
		lerr := l.Load(&rec)
		if lerr != nil && !errors.Is(lerr, store.ErrCorrupt) {
			l.Unlock()
			errs = append(errs, lerr)
			continue
		}
		if lerr == nil {
			if st := r.reconcile(ctx, &rec); st != Exited {
				l.Unlock()
				continue
			}
		} else {
			// The record is lost: end whatever still runs for it.
			procs, err := sandboxProcesses(l.Dir())
			if err == nil {
				err = killAll(ctx, procs)
			}
			if err != nil {
				l.Unlock()
				errs = append(errs, err)
				continue
			}
		}
		if err := releaseTaps(ctx, &rec); err != nil {
			errs = append(errs, err)
		}
		if err := l.Remove(); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, e.ID)
		}
		l.Unlock()
	}
	return removed, errors.Join(errs...)
}
