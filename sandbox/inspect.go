package sandbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/kindling-vm/kindling/internal/store"
)

// Inspect returns the sandbox's Info, its status reconciled with the host.
func (r *Runtime) Inspect(ctx context.Context, id string) (Info, error) {
	e, err := r.loadCached(id, store.Stamp{})
	if err != nil {
		return Info{}, r.loadError(id, err)
	}
	return r.hostInfo(ctx, &e.rec, deepCopy(e.base)), nil
}

// ListOptions select the sandboxes List returns.
type ListOptions struct {
	// Labels, when set, keeps only the sandboxes that carry every one of
	// these labels with these values.
	Labels map[string]string `json:"labels,omitempty"`
}

// matches reports whether a sandbox with spec s is selected by o.
func (o ListOptions) matches(s Spec) bool {
	for k, v := range o.Labels {
		if have, ok := s.Labels[k]; !ok || have != v {
			return false
		}
	}
	return true
}

// List returns the sandboxes o selects (every one for the zero
// ListOptions), sorted by ID, each reconciled with the host. A sandbox
// whose create never finished is left out (GC removes it); one whose state
// file cannot be read is listed, with a status that says why, unless o
// filters by label.
func (r *Runtime) List(ctx context.Context, o ListOptions) ([]Info, error) {
	entries, err := r.st.List()
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	infos := make([]Info, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	defer r.records.keepOnly(seen)
	for _, e := range entries {
		seen[e.ID] = true
		if e.Incomplete {
			// A create under way, or one that crashed — or a sandbox whose
			// state file was deleted under its running VMM: show that one.
			if len(o.Labels) == 0 && len(hostVMMs(e.Dir)) > 0 {
				infos = append(infos, r.lostInfo(e.ID, store.ErrNotFound))
			}
			continue
		}
		c, err := r.loadCached(e.ID, e.Stamp)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) && !r.dirExists(e.ID) {
				continue // removed meanwhile
			}
			if len(o.Labels) == 0 {
				infos = append(infos, r.lostInfo(e.ID, err))
			}
			continue
		}
		if !o.matches(c.rec.Spec) {
			continue
		}
		infos = append(infos, r.hostInfo(ctx, &c.rec, deepCopy(c.base)))
	}
	return infos, nil
}

func (r *Runtime) loadError(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("sandbox %q: %w", id, ErrNotFound)
	}
	return fmt.Errorf("sandbox %q: %w", id, err)
}

// info turns a record into Info, reconciling its status with the host.
func (r *Runtime) info(ctx context.Context, rec *record) Info {
	return r.hostInfo(ctx, rec, r.baseInfo(rec))
}

// baseInfo is the part of rec's Info that the record alone gives: all but
// its status and processes, which hostInfo adds. The cache keeps it.
func (r *Runtime) baseInfo(rec *record) Info {
	// The ID is the directory's name: that is what every command finds
	// the sandbox by. A record saying otherwise is flagged, not believed.
	id, recordID := rec.ID, ""
	if rec.dirID != "" && rec.dirID != rec.ID {
		id, recordID = rec.dirID, rec.ID
	}
	dir, _ := r.st.Dir(id)
	in := Info{
		ID: id, RecordID: recordID, Spec: rec.Spec, Kernel: rec.Kernel,
		CreatedAt: rec.CreatedAt, StartedAt: rec.StartedAt, Exit: rec.Exit,
		RestoredFrom:   rec.RestoreFrom,
		Dir:            dir,
		APISocket:      filepath.Join(dir, apiSocketName),
		ConsoleLog:     filepath.Join(dir, consoleName),
		FirecrackerLog: filepath.Join(dir, fcLogName),
	}
	if rec.Spec.VsockCID != 0 {
		in.VsockSocket = filepath.Join(dir, vsockName)
	}
	jailInfo(&in, rec, dir)
	for _, t := range rec.Taps {
		in.Taps = append(in.Taps, TapInfo{Name: t.Name, NetNS: t.NetNS, MAC: t.MAC, Created: t.Owned})
	}
	in.Network = networkInfo(rec.Network)
	if rec.Machine != nil {
		in.Slots = rec.Machine.Pool
		in.FirecrackerVersion = rec.Machine.Firecracker
	}
	return in
}

// hostInfo completes in, rec's baseInfo (which it may change: a copy the
// caller owns), with what the host shows: the status reconciled, the
// processes that run.
func (r *Runtime) hostInfo(ctx context.Context, rec *record, in Info) Info {
	in.Status = r.reconcile(ctx, rec)
	if in.Status == Exited && in.Exit == nil && rec.Status != Exited {
		// The VMM is gone but nobody could record how (the monitor died, or
		// the disk was full when it tried).
		in.Exit = &Exit{Code: -1, Error: "the VMM exited but its exit was not recorded"}
	}
	if rec.Machine != nil {
		if in.Status == Running || in.Status == Paused || in.Status == Orphaned {
			in.PID = rec.Machine.PID
		}
	} else if in.Status == Orphaned {
		in.PID = r.strayVMM(rec)
	}
	if rec.Monitor != nil {
		// reconcile found the monitor running for these, gone for
		// Orphaned; it did not look for the others.
		switch in.Status {
		case Starting, Running, Paused:
			in.MonitorPID = rec.Monitor.PID
		case Orphaned:
		default:
			if r.alive(*rec.Monitor) {
				in.MonitorPID = rec.Monitor.PID
			}
		}
	}
	return in
}

// reconcile returns the sandbox's status as the host shows it: a recorded
// Running or Paused VMM that is gone is Exited, one whose monitor is gone is
// Orphaned. Pause and Resume keep the Running/Paused distinction recorded.
func (r *Runtime) reconcile(_ context.Context, rec *record) Status {
	switch rec.Status {
	case Created, Exited:
		return rec.Status
	}
	monitorAlive := rec.Monitor != nil && r.alive(*rec.Monitor)
	if rec.Machine == nil {
		// Starting: the VMM is not recorded yet.
		if monitorAlive {
			return Starting
		}
		// The monitor died during the start: its VMM may run on,
		// unrecorded, which the host shows.
		if r.strayVMM(rec) > 0 {
			return Orphaned
		}
		return Exited
	}
	vmmRef := procRef{PID: rec.Machine.PID, StartTime: rec.Machine.StartTime}
	if !r.alive(vmmRef) {
		return Exited
	}
	if !monitorAlive {
		return Orphaned
	}
	return rec.Status
}

// strayVMM returns the PID of a VMM the host shows running for the
// sandbox of rec although its record names none (its monitor died during
// the start), or 0.
func (r *Runtime) strayVMM(rec *record) int {
	id := rec.ID
	if rec.dirID != "" {
		id = rec.dirID
	}
	dir, err := r.st.Dir(id)
	if err != nil {
		return 0
	}
	procs, _ := hostPIDs(dir)
	for _, p := range procs {
		if rec.Monitor == nil || p.PID != rec.Monitor.PID {
			return p.PID
		}
	}
	return 0
}
