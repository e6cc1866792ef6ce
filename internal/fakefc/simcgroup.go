package fakefc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// simCgroupParent is the directory, under the cgroup v2 mount, that holds
// one cgroup per simulated guest.
const simCgroupParent = "kindling-sim"

// simCgroup is the cgroup v2 directory of one simulated guest: its freezer
// pauses the guest, and cgroup.kill ends it.
type simCgroup struct {
	dir string
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted (the
// unified hierarchy of a hybrid host too), or "" when it is not.
func cgroup2Mount() string {
	// This thread's view: under the fake jailer the process's is the
	// jail's, which holds no cgroup mount (simjail.go).
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" {
			return f[4]
		}
	}
	return ""
}

// simCgroupDir is the directory of the cgroup name of a simulated guest:
// kindling-sim/<name> under the cgroup v2 mount.
func simCgroupDir(name string) (string, error) {
	mnt := cgroup2Mount()
	if mnt == "" {
		return "", errors.New("no cgroup v2 hierarchy mounted")
	}
	return filepath.Join(mnt, simCgroupParent, name), nil
}

// newSimCgroup creates the cgroup dir (from simCgroupDir), and its parent
// when missing, and checks that it has a freezer.
func newSimCgroup(dir string) (*simCgroup, error) {
	parent := filepath.Dir(dir)
	// Another fake may remove the shared parent between the two mkdirs
	// (its last guest ended): then make it again.
	for try := 0; ; try++ {
		if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) || try == 3 {
			return nil, err
		}
	}
	cg := &simCgroup{dir: dir}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err != nil {
		_ = cg.remove()
		return nil, fmt.Errorf("cgroup %s has no freezer: %w", dir, err)
	}
	return cg, nil
}

// sweepAge is how old a cgroup must be before sweepSimCgroups may remove
// it: a fake makes its guest's cgroup moments before the guest starts in
// it, so a young empty cgroup may be one being set up (by a fake whose
// PID this process cannot see, in another PID namespace).
const sweepAge = time.Minute

// sweepSimCgroups removes the cgroups under parent (the kindling-sim
// directory) that fakes no longer running left behind, empty: one whose
// janitor was killed before it was done, or a fake killed before it could
// start one. A cgroup whose creator (named in the cgroup's name, see
// simCgroupName) still runs, that still holds processes or that is younger
// than sweepAge is left alone, as are names of any other form.
func sweepSimCgroups(parent string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		pid, start, ok := simCgroupCreator(e.Name())
		if !ok {
			continue
		}
		if st, err := kunix.ProcessStartTime(pid); err == nil && st == start {
			continue // its fake still runs
		}
		cg := &simCgroup{dir: filepath.Join(parent, e.Name())}
		fi, err := os.Stat(cg.dir)
		if err != nil || time.Since(fi.ModTime()) < sweepAge {
			continue
		}
		if populated, err := cg.events("populated"); err != nil || populated != "0" {
			continue // its janitor may still be ending its processes
		}
		_ = os.Remove(cg.dir) // not the parent: this fake is about to use it
	}
}

// events returns the value of key in cgroup.events ("populated", "frozen").
func (cg *simCgroup) events(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(cg.dir, "cgroup.events"))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: no %q in cgroup.events", cg.dir, key)
}

// setFrozen freezes (or thaws) the cgroup and waits up to timeout until
// the kernel reports it done.
func (cg *simCgroup) setFrozen(frozen bool, timeout time.Duration) error {
	want := "0"
	if frozen {
		want = "1"
	}
	if err := os.WriteFile(filepath.Join(cg.dir, "cgroup.freeze"), []byte(want), 0); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		v, err := cg.events("frozen")
		if err != nil {
			return err
		}
		if v == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: frozen is %s after %v, want %s", cg.dir, v, timeout, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// destroy kills every process left in the cgroup, waits up to timeout for
// them to go, and removes the cgroup (and the shared parent, if empty). A
// cgroup already gone is not an error. The kernel may refuse the removal
// (EBUSY) for a moment after the last process left: it is tried again
// until timeout.
func (cg *simCgroup) destroy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		populated, err := cg.events("populated")
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if populated == "0" {
			err := cg.remove()
			if !errors.Is(err, syscall.EBUSY) {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%w (still busy after %v)", err, timeout)
			}
		} else if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes after %v", cg.dir, timeout)
		}
		cg.killAll()
		time.Sleep(2 * time.Millisecond)
	}
}

// killAll sends SIGKILL to every process of the cgroup: through cgroup.kill
// where the kernel has it (5.14+), else one by one. A frozen process dies
// of SIGKILL too.
func (cg *simCgroup) killAll() {
	if os.WriteFile(filepath.Join(cg.dir, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	b, _ := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs"))
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = os.WriteFile(filepath.Join(cg.dir, "cgroup.freeze"), []byte("0"), 0)
}

// remove removes the cgroup directory, and the shared parent when no other
// guest uses it (another fake may be creating one: then it stays).
func (cg *simCgroup) remove() error {
	if err := os.Remove(cg.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cgroup %s: %w", cg.dir, err)
	}
	_ = os.Remove(filepath.Dir(cg.dir))
	return nil
}

// nsProcesses returns the PIDs (as the host sees them) of every process in
// the PID namespace whose init is the host PID initPID.
func nsProcesses(initPID int) []int {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", initPID))
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// signalNamespace sends sig to every process of the PID namespace of
// initPID, repeating until a pass finds no process it had not signalled
// (a process may fork while the first pass runs). For SIGSTOP it then
// waits, up to timeout, until each process has stopped, so that a pause
// is done when the API answers.
func signalNamespace(initPID int, sig syscall.Signal, timeout time.Duration) error {
	done := map[int]bool{}
	for range 50 {
		fresh := false
		for _, pid := range nsProcesses(initPID) {
			if !done[pid] {
				done[pid] = true
				fresh = true
				_ = syscall.Kill(pid, sig)
			}
		}
		if !fresh {
			break
		}
	}
	if sig != syscall.SIGSTOP {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for pid := range done {
		for {
			st, err := kunix.ProcessState(pid)
			if err != nil || st == 'T' || st == 't' || st == 'Z' || st == 'X' {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d of the guest not stopped after %v (state %c)", pid, timeout, st)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
