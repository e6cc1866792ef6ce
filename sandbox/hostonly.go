package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Every VMM kindling starts can be found from the host alone, so that a
// sandbox whose state file is missing, corrupt or from a newer kindling can
// still be listed, stopped, removed and collected: the monitor runs with
// the sandbox directory as its working directory and "kindling-monitor" as
// its argv[0], and the VMM's command line names its API socket inside the
// sandbox directory (see sandboxProcesses). The functions here act on what
// the host shows when the record cannot say.

// recordLost reports whether err, from loading the record of a sandbox
// whose directory exists, means that this kindling cannot use the record:
// it is missing, corrupt, or written by a newer kindling.
func recordLost(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrTooNew)
}

// hostPIDs are the PIDs of the processes found running for dir.
func hostPIDs(dir string) ([]procRef, error) {
	return sandboxProcesses(dir)
}

// hostVMMs are the VMMs (not monitors) found running for dir: a monitor
// alone in a directory without a state file is one removing its sandbox.
func hostVMMs(dir string) []procRef {
	found, err := kunix.ProcessesUsingDir(dir)
	if err != nil {
		return nil
	}
	var refs []procRef
	for _, p := range found {
		if slices.Contains(p.Args, filepath.Join(dir, apiSocketName)) {
			refs = append(refs, procRef{PID: p.PID, StartTime: p.StartTime})
		}
	}
	return append(refs, jailedVMMs(dir)...)
}

// lostInfo is the Info of a sandbox whose record is lost (loadErr): its
// status says why, and the PID is a process still running for it, if any.
func (r *Runtime) lostInfo(id string, loadErr error) Info {
	dir, _ := r.st.Dir(id)
	in := Info{ID: id, Dir: dir}
	procs, _ := hostPIDs(dir)
	why := loadErr.Error()
	if errors.Is(loadErr, store.ErrNotFound) {
		why = "no state file"
	}
	if len(procs) > 0 {
		in.PID = procs[len(procs)-1].PID
		in.Status = Status(fmt.Sprintf("broken: %s; %d of its processes still run", why, len(procs)))
	} else {
		in.Status = Status("broken: " + why)
	}
	return in
}

// endLost ends the processes the host shows for the sandbox locked by l,
// whose record is lost: SIGTERM then SIGKILL (at once with kill). It
// reports whether anything was running.
func endLost(ctx context.Context, l *store.Locked, kill bool) (bool, error) {
	procs, err := hostPIDs(l.Dir())
	if err != nil {
		return false, err
	}
	var errs []error
	for _, p := range procs {
		errs = append(errs, signalEnd(ctx, p, kill))
	}
	return len(procs) > 0, errors.Join(errs...)
}

// dirExists reports whether sandbox id's directory is there (a record that
// cannot be loaded then belongs to a sandbox that still exists).
func (r *Runtime) dirExists(id string) bool {
	dir, err := r.st.Dir(id)
	if err != nil {
		return false
	}
	_, err = os.Lstat(dir)
	return err == nil
}
