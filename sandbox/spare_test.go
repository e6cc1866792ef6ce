package sandbox

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// waitSpares waits until r has n spare monitors ready and returns them.
func waitSpares(t *testing.T, r *Runtime, n int) []*monitorProc {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r.spares.mu.Lock()
		idle := slices.Clone(r.spares.idle)
		r.spares.mu.Unlock()
		if len(idle) == n {
			return idle
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spare monitors ready after 20s, want %d", len(idle), n)
		}
	}
}

// procArgs is process pid's command line and working directory.
func procArgs(t *testing.T, pid int) (args []string, cwd string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		args = append(args, string(a))
	}
	cwd, err = os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
	if err != nil {
		t.Fatal(err)
	}
	return args, cwd
}

// A runtime with spare monitors starts them ahead of need; a start claims
// one, which becomes the sandbox's monitor as one started for it would be
// (log, working directory, command line, found without the record), and
// is replaced. A spare killed by hand is passed over; one whose runtime
// lets go (its stdin ends) exits 0; Close ends the rest.
func TestSpareMonitors(t *testing.T) {
	dir := smallMonitorDir(t)
	fc := testutil.FakeFirecracker(t)
	r := openWith(t, WithMonitorExecutable(filepath.Join(dir, "sandbox.test")), WithSpareMonitors(2))
	t.Cleanup(func() { r.Close() })
	ctx := context.Background()
	if n := r.SpareMonitors(); n != 0 {
		t.Fatalf("%d spares after Open, want none before FillSpareMonitors", n)
	}
	r.FillSpareMonitors()

	spares := waitSpares(t, r, 2)
	seen := map[int]bool{}
	for _, m := range spares {
		seen[m.ref.PID] = true
		args, cwd := procArgs(t, m.ref.PID)
		if len(args) != 2 || args[0] != monitor.Arg0 || args[1] != monitor.SpareArg || cwd != "/" {
			t.Errorf("spare %d: command line %q in %s; want [%s %q] in /", m.ref.PID, args, cwd, monitor.Arg0, monitor.SpareArg)
		}
		if exe := processExe(t, m.ref.PID); exe != filepath.Join(dir, MonitorExecutableName) {
			t.Errorf("spare %d runs %s, want the small monitor", m.ref.PID, exe)
		}
	}

	kernel := haltGuest(t, "claimed says hi")
	if _, err := r.Create(ctx, Spec{ID: "claimed", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := r.Start(ctx, "claimed")
	if err != nil {
		t.Fatal(err)
	}
	if !seen[in.MonitorPID] {
		t.Fatalf("the sandbox's monitor is %d, not one of the spares %v", in.MonitorPID, seen)
	}
	waitConsole(t, in, "claimed says hi")
	args, cwd := procArgs(t, in.MonitorPID)
	if len(args) < 2 || args[0] != monitor.Arg0 || args[1] != "claimed" || cwd != in.Dir {
		t.Errorf("claimed monitor: command line %q in %s; want [%s claimed …] in %s", args, cwd, monitor.Arg0, in.Dir)
	}
	procs, err := sandboxProcesses(in.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(procs, func(p procRef) bool { return p.PID == in.MonitorPID }) {
		t.Errorf("the sandbox's processes found without its record, %v, leave out its monitor %d", procs, in.MonitorPID)
	}
	log, err := os.ReadFile(filepath.Join(in.Dir, monitorLogName))
	if err != nil || !strings.Contains(string(log), "VMM spawned") {
		t.Errorf("the claimed monitor's log: %v, %q; want its \"VMM spawned\" line", err, log)
	}

	// Replaced: two spares again, one of them new.
	spares = waitSpares(t, r, 2)
	fresh := 0
	for _, m := range spares {
		if !seen[m.ref.PID] {
			fresh++
			seen[m.ref.PID] = true
		}
	}
	if fresh != 1 {
		t.Errorf("after one claim the spares hold %d new monitors, want 1", fresh)
	}

	// A spare killed by hand is passed over.
	gone := spares[0]
	if err := kunix.Kill(gone.ref.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-gone.done
	if _, err := r.Create(ctx, Spec{ID: "second", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in2, err := r.Start(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	if in2.MonitorPID == gone.ref.PID || !seen[in2.MonitorPID] {
		t.Errorf("the second sandbox's monitor is %d; want the live spare, not the killed %d", in2.MonitorPID, gone.ref.PID)
	}
	for _, id := range []string{"claimed", "second"} {
		if err := r.Stop(ctx, id, StopGrace(0)); err != nil {
			t.Fatal(err)
		}
		if err := r.Remove(ctx, id, false); err != nil {
			t.Fatal(err)
		}
	}

	// Let go of one spare as the runtime's exit would: it exits 0.
	waitSpares(t, r, 2)
	r.spares.mu.Lock()
	m := r.spares.idle[0]
	r.spares.idle = r.spares.idle[1:]
	r.spares.mu.Unlock()
	m.closePipes()
	select {
	case <-m.done:
		if code := m.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("a spare whose stdin ended exited %d, want 0", code)
		}
	case <-time.After(10 * time.Second):
		m.kill()
		t.Fatal("a spare whose stdin ended did not exit")
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := r.SpareMonitors(); n != 0 {
		t.Errorf("%d spares after Close", n)
	}
	for pid := range seen {
		if kunix.Kill(pid, 0) == nil {
			t.Errorf("monitor %d is alive after Close and the sandboxes' ends", pid)
		}
	}
	waitNoProcesses(t, "after Close", r.Root())
}
