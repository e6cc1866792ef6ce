package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/vmm"
)

// monitorArg0 is the monitor's argv[0], which names it in ps.
const monitorArg0 = monitor.Arg0

// Start starts a created (or exited) sandbox: it creates the sandbox's own
// taps, then starts its monitor, which spawns the VMM, configures and boots
// it (or loads its snapshot) through its API, and tells the monitor to keep
// it, which records it running. Start
// returns once the VM runs (and, with Spec.WaitConsole, once the console has
// shown that text) or with the reason it did not start; then nothing is left
// running. ctx bounds the start only: cancelling it later does not stop the
// sandbox.
func (r *Runtime) Start(ctx context.Context, id string) (_ Info, err error) {
	ctx, end := r.span(ctx, "sandbox.Start", id)
	defer end(&err)

	l, err := r.st.Lock(ctx, id)
	if err != nil {
		return Info{}, r.loadError(id, err)
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		return Info{}, r.loadError(id, err)
	}
	st := r.reconcile(ctx, &rec)
	if st != Created && st != Exited {
		return Info{}, fmt.Errorf("start sandbox %q: it is %s: %w", id, st, ErrInvalidState)
	}
	if st == Exited && rec.RestoreFrom != "" {
		// Loading the snapshot again would pair its memory with disks that
		// have moved on since.
		return Info{}, fmt.Errorf("start sandbox %q: it was restored from %s and has exited; its drives no longer match that snapshot: remove it and restore or clone again: %w", id, rec.RestoreFrom, ErrInvalidState)
	}
	if err := r.checkExecutables(&rec); err != nil {
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	// A previous run's networks may still be held: its monitor tears them
	// down after recording the exit, without the lock in between (see
	// MonitorMain), or failed to. They go first, under the lock, so that
	// each is deleted once and never mistaken for this run's.
	if rec.NetActive || rec.Network != nil {
		if err := releaseNetwork(ctx, &rec); err != nil {
			return Info{}, fmt.Errorf("start sandbox %q: tear down the networks of its previous run: %w", id, err)
		}
		if err := l.Save(&rec); err != nil {
			return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
		}
	}
	if err := r.prepareJail(l, &rec); err != nil {
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	if err := r.setUpTaps(ctx, &rec); err != nil {
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	if err := setUpNetwork(ctx, &rec, r.slotPool, func() error { return l.Save(&rec) }); err != nil {
		releaseTaps(context.WithoutCancel(ctx), &rec)
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	// release undoes the taps and the network when the start fails
	// before the monitor owns them.
	release := func() {
		releaseTaps(context.WithoutCancel(ctx), &rec)
		if err := releaseNetwork(context.WithoutCancel(ctx), &rec); err == nil {
			_ = l.Save(&rec)
		}
	}
	bp, err := r.bootPlanOf(&rec, l.Dir())
	if err == nil && bp.cfg.LogPath != "" {
		err = prepareLog(l.Dir(), bp.cfg.LogPath)
	}
	if err != nil {
		release()
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	mon, err := r.spawnMonitor(l.Dir(), &rec)
	if err != nil {
		release()
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	rec.Status, rec.Monitor, rec.Machine, rec.Exit = Starting, &mon.ref, nil, nil
	if err := l.Save(&rec); err != nil {
		mon.kill()
		release()
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	l.Unlock() // the monitor records the running VMM under the lock

	// A spare claimed is replaced once this start is done with the CPU.
	defer r.FillSpareMonitors()
	if err := r.boot(ctx, mon, bp, l.Dir()); err != nil {
		// The monitor has recorded the failure and exited: a failed
		// Start leaves no process behind.
		return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	in, err := r.Inspect(context.WithoutCancel(ctx), id)
	if errors.Is(err, ErrNotFound) && rec.AutoRemove {
		// It started, ran and was removed by its monitor meanwhile.
		return Info{ID: id, Status: Exited, Spec: rec.Spec, Kernel: rec.Kernel, CreatedAt: rec.CreatedAt}, nil
	}
	if err == nil && rec.Spec.Agent && in.Status == Running {
		if err := r.startAgent(ctx, in); err != nil {
			return Info{}, fmt.Errorf("start sandbox %q: %w", id, err)
		}
	}
	return in, err
}

// setUpTaps creates the taps the sandbox owns and checks the ones it uses.
func (r *Runtime) setUpTaps(ctx context.Context, rec *record) error {
	for i, t := range rec.Taps {
		if !t.Owned {
			if err := netdev.CheckTap(t.Name, t.NetNS); err != nil {
				return err
			}
			continue
		}
		_, err := netdev.CreateTap(ctx, netdev.TapSpec{Name: t.Name, NetNS: t.NetNS, Owner: tapOwner(rec)})
		if errors.Is(err, netdev.ErrExists) {
			// Left from an earlier run of this sandbox: usable if it is a
			// free tap, not someone else's device.
			err = netdev.CheckTap(t.Name, t.NetNS)
		}
		if err != nil {
			// Roll back the ones made so far.
			partial := *rec
			partial.Taps = rec.Taps[:i]
			releaseTaps(context.WithoutCancel(ctx), &partial)
			return err
		}
	}
	return nil
}

// releaseTaps deletes the taps the sandbox owns; missing ones are fine.
func releaseTaps(ctx context.Context, rec *record) error {
	var errs []error
	for _, t := range rec.Taps {
		if !t.Owned {
			continue
		}
		if err := netdev.DeleteTap(ctx, t.Name, t.NetNS); err != nil && !errors.Is(err, netdev.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StopOption tunes Stop.
type StopOption func(*StopOptions)

// StopOptions is what StopOption values set: plain data, so that an
// implementation of Controller in another process can apply the options
// it is given and send the result.
type StopOptions struct {
	// Grace, when set, is how long Stop waits for the guest to shut down
	// after Ctrl-Alt-Del before it sends SIGTERM; see StopGrace.
	Grace *time.Duration `json:"grace,omitempty"`
}

// StopGrace sets how long Stop waits for the guest to shut down after
// Ctrl-Alt-Del before it sends SIGTERM; zero skips Ctrl-Alt-Del. The default
// is vmm.DefaultStopGrace, or zero for the built-in demo guest, which
// ignores Ctrl-Alt-Del.
func StopGrace(d time.Duration) StopOption {
	return func(o *StopOptions) { o.Grace = &d }
}

// Stop stops the sandbox's VMM within ctx's deadline (Ctrl-Alt-Del, then
// SIGTERM, then SIGKILL) and returns once its monitor has recorded the exit
// and released the sandbox's host resources. Stopping a sandbox that is not
// running is not an error.
func (r *Runtime) Stop(ctx context.Context, id string, opts ...StopOption) error {
	var o StopOptions
	for _, opt := range opts {
		opt(&o)
	}
	return r.end(ctx, id, "stop", "sandbox.Stop", func(m *vmm.Machine, ctx context.Context) error {
		return m.Stop(ctx)
	}, o)
}

// Kill kills the sandbox's VMM with SIGKILL; otherwise like Stop.
func (r *Runtime) Kill(ctx context.Context, id string) error {
	return r.end(ctx, id, "kill", "sandbox.Kill", (*vmm.Machine).Kill, StopOptions{})
}

func (r *Runtime) end(ctx context.Context, id, op, spanName string, how func(*vmm.Machine, context.Context) error, so StopOptions) (err error) {
	ctx, end := r.span(ctx, spanName, id)
	defer end(&err)

	l, err := r.st.Lock(ctx, id)
	if err != nil {
		return r.loadError(id, err)
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		if recordLost(err) {
			// Without a record the host still shows what runs for the
			// sandbox: end that.
			ran, kerr := endLost(ctx, l, op == "kill")
			if kerr != nil {
				return fmt.Errorf("%s sandbox %q: %w", op, id, kerr)
			}
			if ran {
				r.log.Debug("ended the processes of a sandbox without a readable record", "sandbox", id, "record", err)
				return nil
			}
		}
		return r.loadError(id, err)
	}
	rec.dirID = id
	switch r.reconcile(ctx, &rec) {
	case Created, Exited:
		return r.settle(ctx, l, &rec)
	case Starting:
		// Abort the start: the monitor cleans up and reports.
		if rec.Monitor != nil {
			signalRef(*rec.Monitor, syscall.SIGTERM)
		}
	default:
		grace := vmm.DefaultStopGrace
		switch {
		case so.Grace != nil:
			grace = *so.Grace
		case rec.Spec.Kernel == "":
			grace = 0 // the demo guest ignores Ctrl-Alt-Del
		}
		opts := append(r.vmmOptions(), vmm.WithStopGrace(grace))
		if rec.Machine == nil {
			// Orphaned during its start: the monitor died before it
			// recorded the VMM, which the host still shows.
			if _, err := endLost(ctx, l, op == "kill"); err != nil {
				return fmt.Errorf("%s sandbox %q: %w", op, id, err)
			}
		} else if err := endVMM(ctx, &rec, op == "kill", how, opts...); err != nil {
			return fmt.Errorf("%s sandbox %q: %w", op, id, err)
		}
	}
	// Let the monitor record the exit: it needs the lock.
	l.Unlock()
	if rec.Monitor != nil {
		if err := r.waitMonitor(ctx, *rec.Monitor); err != nil {
			return fmt.Errorf("%s sandbox %q: wait for its monitor: %w", op, id, err)
		}
	}
	l, err = r.st.Lock(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil // auto-removed by its monitor
	}
	if err != nil {
		return r.loadError(id, err)
	}
	defer l.Unlock()
	if err := l.Load(&rec); err != nil {
		return r.loadError(id, err)
	}
	return r.settle(ctx, l, &rec)
}

// endVMM ends the sandbox's recorded VMM: through the driver when its API
// answers, else (a SIGSTOPped, wedged or saturated VMM) with signals sent
// straight to the recorded process, so that a VMM can always be stopped.
func endVMM(ctx context.Context, rec *record, kill bool, how func(*vmm.Machine, context.Context) error, opts ...vmm.Option) error {
	actx, cancel := context.WithTimeout(ctx, attachBudget(ctx))
	m, err := vmm.Attach(actx, *rec.Machine, opts...)
	cancel()
	switch {
	case errors.Is(err, vmm.ErrNotFound):
		return nil // gone already
	case err == nil:
		defer m.Release()
		return how(m, ctx)
	}
	return signalEnd(ctx, procRef{PID: rec.Machine.PID, StartTime: rec.Machine.StartTime}, kill)
}

// attachBudget is how much of ctx an attach may take before the caller
// gives up on the API: a quarter of what is left, at most a second.
func attachBudget(ctx context.Context) time.Duration {
	d := time.Second
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) / 4; left < d {
			d = left
		}
	}
	return d
}

// signalEnd ends process p without its API: SIGCONT and SIGTERM, then (after
// half of what is left of ctx, or two seconds) SIGKILL; with kill, SIGKILL
// at once. It returns once p has exited. p is checked by its start time
// first, so a recycled PID is never signalled.
func signalEnd(ctx context.Context, p procRef, kill bool) error {
	fd, err := kunix.OpenPidfd(p.PID)
	if err != nil {
		return nil // gone already
	}
	defer fd.Close()
	if st, err := kunix.ProcessStartTime(p.PID); err != nil || st != p.StartTime {
		return nil // the PID is someone else's now
	}
	exited := make(chan struct{})
	go func() { fd.Wait(); close(exited) }()
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-exited:
			return true
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	if !kill {
		fd.Signal(syscall.SIGCONT)
		fd.Signal(syscall.SIGTERM)
		grace := 2 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			grace = time.Until(dl) / 2
		}
		if wait(grace) {
			return nil
		}
	}
	fd.Signal(syscall.SIGKILL)
	if wait(time.Until(deadlineOr(ctx, 5*time.Second))) {
		return nil
	}
	fd.Close() // ends the waiter
	<-exited
	return fmt.Errorf("firecracker pid %d did not exit after SIGKILL: %w", p.PID, context.Cause(ctx))
}

func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}

// settle finishes the books of a sandbox whose VMM and monitor are gone but
// whose record says otherwise (the monitor died): it records an unknown exit
// and releases the sandbox's host resources. It is called with the lock held.
func (r *Runtime) settle(ctx context.Context, l *store.Locked, rec *record) error {
	if rec.Status == Created || rec.Status == Exited {
		return nil
	}
	rec.Status = Exited
	if rec.Exit == nil {
		rec.Exit = &Exit{Code: -1, At: time.Now().UTC(), Error: "the monitor died before the VMM exited; its exit status is unknown"}
	}
	err := releaseTaps(context.WithoutCancel(ctx), rec)
	err = errors.Join(err, releaseNetwork(context.WithoutCancel(ctx), rec))
	err = errors.Join(err, cleanJail(l.Dir(), rec))
	removeSockets(l.Dir())
	return errors.Join(err, l.Save(rec))
}

// removeSockets removes the API and vsock sockets a dead VMM left behind.
func removeSockets(dir string) {
	for _, n := range []string{apiSocketName, vsockName} {
		os.Remove(filepath.Join(dir, n))
	}
}

// signalRef sends sig to p through a pidfd, once p's start time shows it is
// the process recorded and not a recycled PID.
func signalRef(p procRef, sig syscall.Signal) {
	fd, err := kunix.OpenPidfd(p.PID)
	if err != nil {
		return
	}
	defer fd.Close()
	if st, err := kunix.ProcessStartTime(p.PID); err == nil && st == p.StartTime {
		fd.Signal(sig)
	}
}

// waitMonitor waits until the monitor p has exited (or ctx ends) and, when
// this runtime started it, has been reaped, so that no zombie of it is
// left once a Stop or Wait returns.
func (r *Runtime) waitMonitor(ctx context.Context, p procRef) error {
	if err := waitGone(ctx, p); err != nil {
		return err
	}
	r.childMu.Lock()
	m := r.children[p.PID]
	r.childMu.Unlock()
	if m == nil || m.ref != p {
		return nil
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitGone waits until p has exited (or ctx ends). p is not our child, so
// it is watched through a pidfd.
func waitGone(ctx context.Context, p procRef) error {
	fd, err := kunix.OpenPidfd(p.PID)
	if err != nil {
		return nil // gone already
	}
	defer fd.Close()
	if st, err := kunix.ProcessStartTime(p.PID); err != nil || st != p.StartTime {
		return nil // the PID is someone else's now
	}
	done := make(chan error, 1)
	go func() { done <- fd.Wait() }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		fd.Close() // wakes the waiter
		<-done
		return ctx.Err()
	}
}

// Remove deletes a sandbox and everything it owns. A running sandbox is
// refused unless force is set; then it is killed first. A sandbox whose
// state file is corrupt is removed too; processes still using its
// directory are killed with force, and refused without.
func (r *Runtime) Remove(ctx context.Context, id string, force bool) (err error) {
	ctx, end := r.span(ctx, "sandbox.Remove", id)
	defer end(&err)

	if err := store.ValidateID(id); err != nil {
		return specError(err)
	}
	var rec record
	if err := r.st.Load(id, &rec); recordLost(err) && r.dirExists(id) {
		return r.removeLost(ctx, id, force, err)
	} else if err != nil {
		return r.loadError(id, err)
	}
	awaitMonitorExit(ctx, &rec)
	if st := r.reconcile(ctx, &rec); st != Created && st != Exited {
		if !force {
			return fmt.Errorf("remove sandbox %q: it is %s: %w", id, st, ErrInvalidState)
		}
		if err := r.Kill(ctx, id); err != nil {
			return fmt.Errorf("remove sandbox %q: %w", id, err)
		}
	}
	l, err := r.st.Lock(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return r.loadError(id, err)
	}
	defer l.Unlock()
	if err := l.Load(&rec); err != nil {
		return r.loadError(id, err)
	}
	if st := r.reconcile(ctx, &rec); st != Created && st != Exited {
		return fmt.Errorf("remove sandbox %q: it is %s again: %w", id, st, ErrInvalidState)
	}
	if err := killAbandoned(ctx, l.Dir(), &rec); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := releaseTaps(context.WithoutCancel(ctx), &rec); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := releaseNetwork(context.WithoutCancel(ctx), &rec); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, errors.Join(err, l.Save(&rec)))
	}
	if err := r.releaseJail(l.Dir(), &rec); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := l.Remove(); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	r.afterJailedRemove(&rec)
	return nil
}

// killAbandoned kills what a Start that died before recording its monitor
// left running: a created sandbox with no monitor recorded but a monitor
// log has had one spawned, which may still be booting a VMM in dir (it
// will not record it, see the monitor). It is called with the lock held.
func killAbandoned(ctx context.Context, dir string, rec *record) error {
	if rec.Status != Created || rec.Monitor != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, monitorLogName)); err != nil {
		return nil // never started
	}
	return killFound(ctx, dir)
}

// killFound kills every process found running for dir until none is left:
// a monitor killed just after it spawned its VMM leaves the VMM to the
// next look.
func killFound(ctx context.Context, dir string) error {
	for range 5 {
		procs, err := sandboxProcesses(dir)
		if err != nil || len(procs) == 0 {
			return err
		}
		if err := killAll(ctx, procs); err != nil {
			return err
		}
	}
	if procs, _ := sandboxProcesses(dir); len(procs) > 0 {
		return fmt.Errorf("processes of %s keep appearing (pid %d)", dir, procs[0].PID)
	}
	return nil
}

// Wait waits until the sandbox's VMM has exited and its monitor recorded
// it, and returns how it exited.
func (r *Runtime) Wait(ctx context.Context, id string) (*Exit, error) {
	var rec record
	if err := r.st.Load(id, &rec); err != nil {
		return nil, r.loadError(id, err)
	}
	if rec.Monitor != nil {
		if err := r.waitMonitor(ctx, *rec.Monitor); err != nil {
			return nil, err
		}
	}
	in, err := r.Inspect(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil // auto-removed
	}
	if err != nil {
		return nil, err
	}
	return in.Exit, nil
}

// removeLost removes a sandbox whose state file cannot be used (missing,
// corrupt, or from a newer kindling). Its record is lost, so its processes
// are found by what they use: the monitor's working directory is the
// sandbox directory and the VMM's API socket is in it. Without force, a
// sandbox with processes, or a newer kindling's, is refused.
func (r *Runtime) removeLost(ctx context.Context, id string, force bool, loadErr error) error {
	l, err := r.st.Lock(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return r.loadError(id, err)
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err == nil {
		// A create finished meanwhile: the record is there after all.
		l.Unlock()
		return r.Remove(ctx, id, force)
	}
	procs, err := sandboxProcesses(l.Dir())
	if err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if len(procs) > 0 && !force {
		return fmt.Errorf("remove sandbox %q: %w, and %d processes still use it (pid %d): %w", id, loadErr, len(procs), procs[0].PID, ErrInvalidState)
	}
	if errors.Is(loadErr, store.ErrTooNew) && !force {
		return fmt.Errorf("remove sandbox %q: %w: %w", id, loadErr, ErrInvalidState)
	}
	if err := killAll(ctx, procs); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := r.releaseJail(l.Dir(), nil); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := l.Remove(); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	r.afterJailedRemove(nil)
	return nil
}

// sandboxProcesses finds the monitor and VMM of the sandbox in dir without
// its record: processes in dir named as a monitor, and processes whose
// command line holds dir's API socket.
func sandboxProcesses(dir string) ([]procRef, error) {
	found, err := kunix.ProcessesUsingDir(dir)
	if err != nil {
		return nil, fmt.Errorf("find the processes of %s: %w", dir, err)
	}
	var refs []procRef
	for _, p := range found {
		monitor := p.Cwd == dir && len(p.Args) > 0 && p.Args[0] == monitorArg0
		vmmProc := slices.Contains(p.Args, filepath.Join(dir, apiSocketName))
		if monitor || vmmProc {
			refs = append(refs, procRef{PID: p.PID, StartTime: p.StartTime})
		}
	}
	return append(refs, jailedVMMs(dir)...), nil
}

// killAll SIGKILLs each process and waits until all have exited.
func killAll(ctx context.Context, procs []procRef) error {
	var errs []error
	for _, p := range procs {
		errs = append(errs, signalEnd(ctx, p, true))
	}
	return errors.Join(errs...)
}
