package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vmmOf returns the PID of the VMM the host shows for the sandbox in dir
// (not its monitor), or 0.
func vmmOf(t *testing.T, dir string) int {
	t.Helper()
	procs, err := sandboxProcesses(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if args, _ := os.ReadFile("/proc/" + itoa(p.PID) + "/cmdline"); strings.Contains(string(args), filepath.Join(dir, apiSocketName)) {
			return p.PID
		}
	}
	return 0
}

func itoa(n int) string { return strconv.Itoa(n) }

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z' && s[i+2] != 'X'
}

// D5: deleting state.json under a running sandbox does not lose its VM:
// ps shows it, gc leaves it running, stop ends it, and then gc removes it.
func TestD5DeletedStateFileVMMStillFound(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in := mustStart(t, r, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32})
	if err := os.Remove(filepath.Join(in.Dir, "state.json")); err != nil {
		t.Fatal(err)
	}
	list, err := r.List(ctx, ListOptions{})
	if err != nil || len(list) != 1 || list[0].ID != "web" || !strings.Contains(string(list[0].Status), "no state file") || list[0].PID == 0 {
		t.Fatalf("list = %+v, %v; want web shown as broken with its PID", list, err)
	}
	rep, err := r.Collect(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 || len(rep.Orphans) != 1 || rep.Orphans[0].ID != "web" || rep.Orphans[0].Killed {
		t.Fatalf("gc = %+v; want web reported as an orphan and left alone", rep)
	}
	if !processAlive(in.PID) {
		t.Fatal("gc ended the VM")
	}
	if err := r.Stop(ctx, "web"); err != nil {
		t.Fatalf("stop without a state file: %v", err)
	}
	if processAlive(in.PID) {
		t.Fatal("stop left the VMM running")
	}
	if rep, err = r.Collect(ctx, GCOptions{}); err != nil || len(rep.Removed) != 1 {
		t.Fatalf("gc after the stop = %+v, %v; want the directory removed", rep, err)
	}
}

// D6: a monitor killed during the start leaves a VMM that ps shows as
// orphaned (not exited), with its PID, and that stop ends.
func TestD6MonitorKilledDuringStartLeavesNoUntrackedVMM(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Setenv("FAKEFC", `{"delay":"300ms"}`)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { _, err := r.Start(ctx, "web"); started <- err }()
	var vmm int
	for deadline := time.Now().Add(5 * time.Second); vmm == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		vmm = vmmOf(t, in.Dir)
	}
	if vmm == 0 {
		t.Fatal("no VMM appeared")
	}
	var rec record
	if err := r.st.Load("web", &rec); err != nil || rec.Monitor == nil {
		t.Fatalf("record while starting: %+v, %v", rec, err)
	}
	if err := syscall.Kill(rec.Monitor.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err == nil {
		t.Fatal("start succeeded although its monitor was killed")
	}
	got, err := r.Inspect(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the kill: VMM %d alive %v, status %s pid %d", vmm, processAlive(vmm), got.Status, got.PID)
	if processAlive(vmm) && (got.Status != Orphaned || got.PID != vmm) {
		t.Fatalf("inspect: %s pid %d; the VMM %d runs on: want orphaned with its PID", got.Status, got.PID, vmm)
	}
	if err := r.Stop(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if processAlive(vmm) {
		t.Fatal("stop left the VMM running")
	}
	if err := r.Remove(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
}

// D9: gc does not kill a running VM whose state file is corrupt: it
// reports it, and kills it only when told to.
func TestD9GCNeverKillsWithoutKillOrphans(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in := mustStart(t, r, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32})
	if err := os.WriteFile(filepath.Join(in.Dir, "state.json"), []byte("}{"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Collect(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 1 || len(rep.Removed) != 0 || !strings.Contains(rep.Orphans[0].Reason, "corrupt") || len(rep.Orphans[0].PIDs) == 0 {
		t.Fatalf("gc = %+v; want the corrupt sandbox reported, not removed", rep)
	}
	if !processAlive(in.PID) {
		t.Fatal("gc without KillOrphans killed the VM")
	}
	rep, err = r.Collect(ctx, GCOptions{KillOrphans: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 1 || !rep.Orphans[0].Killed || len(rep.Removed) != 1 {
		t.Fatalf("gc --kill-orphans = %+v; want it killed and removed", rep)
	}
	if processAlive(in.PID) {
		t.Fatal("gc --kill-orphans left the VM running")
	}
}

// D10: a state file from a newer kindling does not block stop, rm -f and
// gc.
func TestD10TooNewStateDoesNotBlock(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in := mustStart(t, r, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32})
	newer := []byte(`{"version": 99, "data": {"id": "web", "something": "new"}}`)
	if err := os.WriteFile(filepath.Join(in.Dir, "state.json"), newer, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, "web"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if processAlive(in.PID) {
		t.Fatal("stop left the VMM running")
	}
	rep, err := r.Collect(ctx, GCOptions{})
	if err != nil || len(rep.Kept) != 1 || len(rep.Removed) != 0 {
		t.Fatalf("gc = %+v, %v; want the newer kindling's sandbox kept and said so", rep, err)
	}
	if err := r.Remove(ctx, "web", false); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("rm without force: %v, want a refusal", err)
	}
	if err := r.Remove(ctx, "web", true); err != nil {
		t.Fatalf("rm -f: %v", err)
	}
	if _, err := os.Lstat(in.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rm -f left the directory: %v", err)
	}
}

// environOf returns the environment process pid started with.
func environOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// D7: the monitor and Firecracker get a minimal environment, not the
// caller's secrets.
func TestD7MinimalEnvironment(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
	ctx := context.Background()
	in := mustStart(t, r, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32})
	defer r.Remove(ctx, in.ID, true)
	for what, pid := range map[string]int{"monitor": in.MonitorPID, "VMM": in.PID} {
		env := environOf(t, pid)
		joined := strings.Join(env, "\n")
		if strings.Contains(joined, "hunter2") {
			t.Errorf("the %s inherited the caller's secret:\n%s", what, joined)
		}
		if !strings.Contains(joined, "PATH=") {
			t.Errorf("the %s has no PATH:\n%s", what, joined)
		}
	}
}

// D12: a start without a deadline of the caller's does not wait forever
// for a monitor that never reports (stopped with SIGSTOP); it says what
// to do, and leaves nothing running.
func TestD12StartReportHasADefaultDeadline(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Setenv("FAKEFC", `{"delay":"300ms"}`)
	old := reportWait
	reportWait = time.Second
	defer func() { reportWait = old }()
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, "web", true)
	started := make(chan error, 1)
	go func() { _, err := r.Start(ctx, "web"); started <- err }()
	var monitor int
	for deadline := time.Now().Add(5 * time.Second); monitor == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var rec record
		if r.st.Load("web", &rec) == nil && rec.Monitor != nil {
			monitor = rec.Monitor.PID
		}
	}
	if monitor == 0 {
		t.Fatal("no monitor appeared")
	}
	if err := syscall.Kill(monitor, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-started:
		if !errors.Is(err, errNoReport) || !strings.Contains(err.Error(), "start the sandbox again") {
			t.Fatalf("start = %v; want the missing report said, with what to do", err)
		}
	case <-time.After(30 * time.Second):
		syscall.Kill(monitor, syscall.SIGKILL)
		t.Fatal("start waits on a stopped monitor without end")
	}
	if procs, _ := sandboxProcesses(in.Dir); len(procs) > 0 {
		t.Errorf("a start without a report left %d processes", len(procs))
	}
}
