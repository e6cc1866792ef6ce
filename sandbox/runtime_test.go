package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestMain(m *testing.M) {
	MonitorMain() // the monitors the tests start are this binary
	// The tests set the fake's settings in FAKEFC: let them through to it.
	os.Setenv(EnvPassEnv, "FAKEFC")
	testutil.Main(m)
}

// newRuntime opens a runtime on a fresh short root, using the fake
// Firecracker unless real is set, in which case KINDLING_FIRECRACKER must
// name a real one (else the test skips).
func newRuntime(t *testing.T, real bool) (*Runtime, string) {
	t.Helper()
	testutil.CheckLeaks(t)
	fc := ""
	if real {
		fc = testutil.Firecracker(t)
	} else {
		fc = testutil.FakeFirecracker(t)
	}
	root := testutil.ShortTempDir(t)
	r, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertRootEmpty(t, r) })
	return r, fc
}

// assertRootEmpty removes every sandbox left (stopping it) and fails the
// test if any was left, so that no test leaks a VMM or monitor.
func assertRootEmpty(t *testing.T, r *Runtime) {
	t.Helper()
	ctx := context.Background()
	infos, err := r.List(ctx, ListOptions{})
	if err != nil {
		t.Errorf("list at cleanup: %v", err)
	}
	for _, in := range infos {
		t.Errorf("sandbox %s (%s) left behind", in.ID, in.Status)
		if err := r.Remove(ctx, in.ID, true); err != nil {
			t.Errorf("remove leftover %s: %v", in.ID, err)
		}
	}
	ents, _ := os.ReadDir(r.Root())
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Errorf("state root holds %s after the test", e.Name())
		}
	}
}

func haltGuest(t *testing.T, msg string) string {
	return testutil.GuestKernel(t, guest.Options{Message: msg, Mode: guest.Halt})
}

// waitConsole waits until the sandbox's console log holds want.
func waitConsole(t *testing.T, in Info, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var b strings.Builder
		copyLog(in.ConsoleLog, &b)
		if strings.Contains(b.String(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console of %s never showed %q; it holds %q", in.ID, want, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLifecycle(t *testing.T) {
	for _, real := range []bool{false, true} {
		name := "fake"
		if real {
			name = "real"
		}
		t.Run(name, func(t *testing.T) { testLifecycle(t, real) })
	}
}

func testLifecycle(t *testing.T, real bool) {
	r, fc := newRuntime(t, real)
	ctx := context.Background()
	kernel := haltGuest(t, "lifecycle guest up")
	in, err := r.Create(ctx, Spec{ID: "life", Kernel: kernel, Firecracker: fc, VCPUs: 2, MemoryMiB: 64, Placeholders: 2}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != Created {
		t.Fatalf("after create: status %s", in.Status)
	}
	in, err = r.Start(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != Running || in.PID == 0 || in.MonitorPID == 0 {
		t.Fatalf("after start: %+v", in)
	}
	waitConsole(t, in, "lifecycle guest up")
	if _, err := r.Start(ctx, "life"); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("second start: %v, want ErrInvalidState", err)
	}

	tids, err := r.Threads(ctx, "life")
	if err != nil || len(tids) != 2 {
		t.Fatalf("threads = %v, %v; want 2", tids, err)
	}
	if err := r.Pause(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	if in, _ := r.Inspect(ctx, "life"); in.Status != Paused {
		t.Fatalf("after pause: %s", in.Status)
	}
	if err := r.Resume(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	if in, _ := r.Inspect(ctx, "life"); in.Status != Running {
		t.Fatalf("after resume: %s", in.Status)
	}

	data := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(data, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	slot, err := r.AttachDrive(ctx, "life", Disk{Path: data, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	in, _ = r.Inspect(ctx, "life")
	found := false
	for _, s := range in.Slots {
		if s.ID == slot && s.Drive != nil && s.Drive.Path == data {
			found = true
		}
	}
	if !found {
		t.Fatalf("slot %s does not hold %s: %+v", slot, data, in.Slots)
	}
	if err := r.DetachDrive(ctx, "life", slot); err != nil {
		t.Fatal(err)
	}

	if err := r.Remove(ctx, "life", false); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("remove of a running sandbox: %v, want ErrInvalidState", err)
	}
	vmmPID, monPID := in.PID, in.MonitorPID
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx, "life"); err != nil {
		t.Fatal(err)
	}
	in, err = r.Inspect(ctx, "life")
	if err != nil || in.Status != Exited || in.Exit == nil {
		t.Fatalf("after stop: %+v, %v", in, err)
	}
	for _, pid := range []int{vmmPID, monPID} {
		if err := kunix.Kill(pid, 0); err == nil {
			t.Errorf("pid %d still alive after stop", pid)
		}
	}
	if _, err := os.Stat(in.APISocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket still there after stop: %v", err)
	}
	if err := r.Stop(ctx, "life"); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if err := r.Remove(ctx, "life", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Inspect(ctx, "life"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("inspect after rm: %v", err)
	}
}

func TestPowerOffIsRecorded(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := testutil.GuestKernel(t, guest.Options{Message: "bye", Mode: guest.PowerOff})
	if _, err := r.Create(ctx, Spec{ID: "off", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, "off"); err != nil {
		t.Fatal(err)
	}
	exit, err := r.Wait(ctx, "off")
	if err != nil || exit == nil || exit.Code != 0 {
		t.Fatalf("wait = %+v, %v; want exit code 0", exit, err)
	}
	in, _ := r.Inspect(ctx, "off")
	waitConsole(t, in, "bye")
	if err := r.Remove(ctx, "off", false); err != nil {
		t.Fatal(err)
	}
}

func TestDemoGuestAutoRemove(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{Firecracker: fc}, CreateOptions{AutoRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	// The demo guest powers off at once: its monitor may have removed the
	// sandbox before Wait looks it up, which then finds nothing to wait for.
	if _, err := r.Wait(ctx, in.ID); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := r.Inspect(ctx, in.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("auto-removed sandbox still inspectable: %v", err)
	}
	waitNoProcesses(t, "after the auto-removed sandbox exited", r.Root())
}

func TestCreateRefusesBadSpecs(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "x")
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"bad-id", Spec{ID: "../x", Kernel: kernel, Firecracker: fc}, "../x"},
		{"missing-kernel", Spec{Kernel: "/nonexistent/vmlinux", Firecracker: fc}, "/nonexistent/vmlinux"},
		{"missing-firecracker", Spec{Kernel: kernel, Firecracker: "/nonexistent/firecracker"}, "/nonexistent/firecracker"},
		{"too-many-cpus", Spec{Kernel: kernel, Firecracker: fc, VCPUs: 40}, "40"},
		{"bad-tap", Spec{Kernel: kernel, Firecracker: fc, Net: []Net{{Tap: "averyveryverylongname"}}}, "averyveryverylongname"},
		{"bad-mac", Spec{Kernel: kernel, Firecracker: fc, Net: []Net{{Auto: true, MAC: "01:00:00:00:00:01"}}}, "01:00:00:00:00:01"},
		{"missing-rootfs", Spec{Kernel: kernel, Firecracker: fc, Rootfs: &Disk{Path: "/nonexistent/root.img"}}, "/nonexistent/root.img"},
		{"bad-netns", Spec{Kernel: kernel, Firecracker: fc, NetNS: "/nonexistent/ns"}, "/nonexistent/ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Create(ctx, tt.spec, CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create = %v; want an error naming %q", err, tt.want)
			}
			if infos, _ := r.List(ctx, ListOptions{}); len(infos) != 0 {
				t.Fatalf("a refused create left %d sandboxes", len(infos))
			}
		})
	}
	if _, err := r.Create(ctx, Spec{ID: "dup", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, Spec{ID: "dup", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second create of one ID: %v", err)
	}
	if err := r.Remove(ctx, "dup", false); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailureLeavesNothingRunning(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	t.Setenv("FAKEFC", `{"die_at_start":true}`)
	in, err := r.Create(ctx, Spec{Kernel: haltGuest(t, "x"), Firecracker: fc}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Start(ctx, in.ID)
	if err == nil || !strings.Contains(err.Error(), "dying at start") {
		t.Fatalf("start = %v; want the VMM's stderr in the error", err)
	}
	in, _ = r.Inspect(ctx, in.ID)
	if in.Status != Exited || in.Exit == nil || in.Exit.Error == "" {
		t.Fatalf("after a failed start: %+v", in)
	}
	if err := r.Remove(ctx, in.ID, false); err != nil {
		t.Fatal(err)
	}
}

func TestCrashes(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "crash guest")
	start := func(id string) Info {
		t.Helper()
		if _, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		in, err := r.Start(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}

	// The VMM dies: its monitor records the exit.
	in := start("vmmdies")
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err := r.Wait(ctx, "vmmdies")
	if err != nil || exit == nil || exit.Signal == "" {
		t.Fatalf("after SIGKILL of the VMM: exit %+v, %v", exit, err)
	}

	// The monitor dies: the VMM is orphaned, still stoppable.
	in = start("mondies")
	if err := syscall.Kill(in.MonitorPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		in, _ = r.Inspect(ctx, "mondies")
		if in.Status == Orphaned || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if in.Status != Orphaned {
		t.Fatalf("after SIGKILL of the monitor: %s, want orphaned", in.Status)
	}
	if err := r.Stop(ctx, "mondies"); err != nil {
		t.Fatal(err)
	}
	in, _ = r.Inspect(ctx, "mondies")
	if in.Status != Exited {
		t.Fatalf("orphan after stop: %s", in.Status)
	}

	removed, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Fatalf("gc removed %v, want both sandboxes", removed)
	}
}
