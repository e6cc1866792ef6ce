package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/vmm"
)

// smallMonitorDir makes a directory holding a kindling-monitor built from
// this tree and this test binary (the full monitor program, which calls
// MonitorMain): the layout of an install of kindling and kindling-monitor.
func smallMonitorDir(t *testing.T) string {
	t.Helper()
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := gotool.Path()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(dir, MonitorExecutableName), "./cmd/kindling-monitor")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kindling-monitor: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "sandbox.test")
	if err := os.Link(self, dst); err != nil {
		if err := copyExecutable(self, dst); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// openWith opens a runtime on a fresh root with opts, cleaned up like
// newRuntime's.
func openWith(t *testing.T, opts ...Option) *Runtime {
	t.Helper()
	testutil.CheckLeaks(t)
	r, err := Open(testutil.ShortTempDir(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertRootEmpty(t, r) })
	return r
}

// processExe is the executable process pid runs.
func processExe(t *testing.T, pid int) string {
	t.Helper()
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// With kindling-monitor next to the monitor program, each sandbox's
// monitor is that small executable, and it records starts and ends as the
// full program does.
func TestSmallMonitorIsUsed(t *testing.T) {
	dir := smallMonitorDir(t)
	fc := testutil.FakeFirecracker(t)
	r := openWith(t, WithMonitorExecutable(filepath.Join(dir, "sandbox.test")))
	exe, small := r.MonitorExecutable()
	if want := filepath.Join(dir, MonitorExecutableName); exe != want || !small {
		t.Fatalf("MonitorExecutable = %s, %v; want %s, true", exe, small, want)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, Spec{ID: "small", Kernel: haltGuest(t, "small says hi"), Firecracker: fc, VsockCID: 3}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := r.Start(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != Running || in.PID == 0 || in.MonitorPID == 0 {
		t.Fatalf("started sandbox is %+v", in)
	}
	if got := processExe(t, in.MonitorPID); got != exe {
		t.Errorf("the monitor runs %s, want %s", got, exe)
	}
	waitConsole(t, in, "small says hi")
	if err := r.Stop(ctx, "small", StopGrace(0)); err != nil {
		t.Fatal(err)
	}
	in, err = r.Inspect(ctx, "small")
	if err != nil || in.Status != Exited || in.Exit == nil {
		t.Fatalf("after stop: %+v, %v", in, err)
	}
	for _, name := range []string{apiSocketName, vsockName} {
		if _, err := os.Lstat(filepath.Join(in.Dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s left after the VMM exited: %v", name, err)
		}
	}
	if err := r.Remove(ctx, "small", false); err != nil {
		t.Fatal(err)
	}

	// A guest that powers off: the small monitor records its exit status
	// and removes the sandbox created to be removed.
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
	if err := r.Remove(ctx, "off", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, Spec{ID: "rm", Kernel: kernel, Firecracker: fc}, CreateOptions{AutoRemove: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, "rm"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.Inspect(ctx, "rm"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the auto-remove sandbox was not removed by its small monitor")
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitNoProcesses(t, "after the small monitor's sandboxes ended", r.Root())
}

// Without kindling-monitor next to it, the monitor is the program itself,
// re-executed.
func TestMonitorFallsBackToTheProgram(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(self), MonitorExecutableName)); err == nil {
		t.Skipf("%s has a kindling-monitor next to it", self)
	}
	fc := testutil.FakeFirecracker(t)
	r := openWith(t)
	exe, small := r.MonitorExecutable()
	if exe != self || small {
		t.Fatalf("MonitorExecutable = %s, %v; want %s, false", exe, small, self)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, Spec{ID: "full", Kernel: haltGuest(t, "hi"), Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := r.Start(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	if got := processExe(t, in.MonitorPID); got != self {
		t.Errorf("the monitor runs %s, want %s", got, self)
	}
	if err := r.Remove(ctx, "full", true); err != nil {
		t.Fatal(err)
	}
}

// The record fields the small monitor writes without package sandbox's
// types have the shapes and values package sandbox reads.
func TestMonitorRecordFieldsAgree(t *testing.T) {
	for _, s := range []struct{ mine, its string }{
		{string(Starting), monitor.StatusStarting}, {string(Running), monitor.StatusRunning}, {string(Exited), monitor.StatusExited},
	} {
		if s.mine != s.its {
			t.Errorf("status %q is %q in the monitor", s.mine, s.its)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	pairs := []struct{ mine, its any }{
		{&Exit{Code: 3, Signal: "SIGKILL", At: at, Error: "e"}, &monitor.Exit{Code: 3, Signal: "SIGKILL", At: at, Error: "e"}},
		{&tapRef{Name: "t", NetNS: "n", MAC: "m", Owned: true}, &monitor.Tap{Name: "t", NetNS: "n", MAC: "m", Owned: true}},
		{&procRef{PID: 7, StartTime: 8}, &monitor.ProcRef{PID: 7, StartTime: 8}},
	}
	for _, p := range pairs {
		if a, b := jsonString(p.mine), jsonString(p.its); a != b {
			t.Errorf("%T encodes as %s, the monitor's %T as %s", p.mine, a, p.its, b)
		}
		if n := reflect.TypeOf(p.mine).Elem().NumField(); n != reflect.TypeOf(p.its).Elem().NumField() {
			t.Errorf("%T has %d fields, the monitor's %T another number", p.mine, n, p.its)
		}
	}
	// The field names the monitor reads and writes are the record's.
	rec := record{Status: Running, Monitor: &procRef{PID: 1}, Machine: &vmm.MachineState{}, Taps: []tapRef{{Name: "t"}}, NetActive: true, AutoRemove: true,
		StartedAt: at, Exit: &Exit{}}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(jsonString(rec)), &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"status", "monitor", "machine", "taps", "net_active", "auto_remove", "started_at", "exit"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("the record has no field %q, which the monitor uses", k)
		}
	}
}

// With the small monitor, which does not link the network package, a
// sandbox's CNI networks are still torn down at every end: its monitor runs
// the full program for that, and the record then says they are gone.
func TestSmallMonitorReleasesCNINetworks(t *testing.T) {
	needCNI(t)
	dir := smallMonitorDir(t)
	fc := testutil.FakeFirecracker(t)
	r := openWith(t, WithMonitorExecutable(filepath.Join(dir, "sandbox.test")))
	if _, small := r.MonitorExecutable(); !small {
		t.Fatal("the runtime did not pick the small monitor")
	}
	ctx := context.Background()
	e := newCNIEnv(t)
	id := "kdsbx-" + hexID(t, 4)
	if _, err := r.Create(ctx, e.spec(t, id, fc, "18090:80"), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.checkNetworkUp(t, r, id, 18090)
	if err := r.Stop(ctx, id, StopGrace(0)); err != nil {
		t.Fatal(err)
	}
	e.checkNothingLeft(t, id, "after stop")
	b, err := os.ReadFile(filepath.Join(r.Root(), id, monitorLogName))
	if err != nil {
		t.Fatal(err)
	}
	if want := monitor.ReleaseLogPrefix + ": tore down the networks"; !strings.Contains(string(b), want) || strings.Contains(string(b), "tear down the network") {
		t.Errorf("the monitor's log does not show the helper's tear-down (%q):\n%s", want, b)
	}
	var rec record
	if err := r.st.Load(id, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Network != nil || rec.NetActive || rec.Status != Exited {
		t.Errorf("after stop the record is %s with network %+v, active %v", rec.Status, rec.Network, rec.NetActive)
	}
	if err := r.Remove(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	e.checkNothingLeft(t, id, "after rm")
}

// A start finds the networks of a previous run still held (its monitor
// tears them down after recording the exit, or failed to): it tears them
// down first, then sets up its own, and nothing is left at the end.
func TestStartTearsDownHeldNetworks(t *testing.T) {
	needCNI(t)
	ctx := context.Background()
	e := newCNIEnv(t)
	r, fc := newRuntime(t, false)
	id := "kdsbx-" + hexID(t, 4)
	if _, err := r.Create(ctx, e.spec(t, id, fc, "18091:80"), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What a run left: the networks set up and recorded.
	l, err := r.st.Lock(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var rec record
	if err := l.Load(&rec); err != nil {
		t.Fatal(err)
	}
	ns, err := netSpec(&rec)
	if err != nil {
		t.Fatal(err)
	}
	nrec, err := netManager(rec.Spec).Setup(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	rec.NetActive, rec.Network = true, nrec
	if err := l.Save(&rec); err != nil {
		t.Fatal(err)
	}
	l.Unlock()

	if _, err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.checkNetworkUp(t, r, id, 18091)
	if err := r.Stop(ctx, id, StopGrace(0)); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	e.checkNothingLeft(t, id, "after rm")
}

// smallMonitorRuntime is newRuntime with kindling-monitor as each
// sandbox's monitor and this test binary as the program it runs for the
// work it does not link.
func smallMonitorRuntime(t *testing.T) (*Runtime, string) {
	t.Helper()
	dir := smallMonitorDir(t)
	fc := testutil.FakeFirecracker(t)
	r := openWith(t, WithMonitorExecutable(filepath.Join(dir, "sandbox.test")))
	if _, small := r.MonitorExecutable(); !small {
		t.Fatal("the runtime did not pick the small monitor")
	}
	return r, fc
}

// With the small monitor, which does not link the network package, a slot
// sandbox's DNS forwarder runs in a helper child for the VMM's life: the
// egress scenarios that need it pass, and the helper ends with the VMM.
func TestSmallMonitorGuestEgress(t *testing.T) {
	testutil.NeedSimulatedGuest(t)
	r, fc := smallMonitorRuntime(t)
	testNetEgress(t, r, fc, nil)
}

// The small monitor cleans a jailed sandbox's jail at every end, as the
// full one does (the fake jailer jails the fake Firecracker for real), and
// gives back its uid and the root's jail parents when it removes it.
func TestSmallMonitorJailEnds(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, fc := smallMonitorRuntime(t)
	testJailEnds(t, r, fc)

	ctx := context.Background()
	kernel := testutil.GuestKernel(t, guest.Options{Message: "jailed rm", Mode: guest.PowerOff})
	in, err := r.Create(ctx, Spec{ID: "d4rm", Firecracker: fc, Kernel: kernel}, CreateOptions{AutoRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	if in.Spec.Jailer == "" {
		t.Fatal("as root the sandbox was not given the jailer")
	}
	if in, err = r.Start(ctx, "d4rm"); err != nil {
		r.Remove(ctx, "d4rm", true)
		t.Fatal(err)
	}
	// The guest powers off at once: its monitor may have removed it before
	// Wait finds it.
	if _, err := r.Wait(ctx, "d4rm"); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := r.Inspect(ctx, "d4rm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the auto-remove sandbox is still there: %v", err)
	}
	if left := JailLeftoversOfRoot(r.Root()); len(left) > 0 {
		t.Errorf("after the auto-remove sandbox's end: %q", left)
	}
	tag := jailRootTag(r.Root())
	for _, p := range append([]string{filepath.Join(jailChrootBase, tag)}, cgroupCandidates(tag, "")...) {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("the root's jail parent %s is left", p)
		}
	}

	// A VMM that dies with a writable drive hot-plugged: its monitor
	// revokes the uid's ACL entry on it (from the record) with the jail.
	in, err = r.Create(ctx, Spec{ID: "d4hot", Firecracker: fc, Demo: DemoIdle, Placeholders: 1, HotplugWritable: true}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, in.ID, true) // after a failure; the test removes it
	if in, err = r.Start(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AttachDrive(ctx, in.ID, Disk{Path: disk}); err != nil {
		t.Fatal(err)
	}
	if ok, err := kunix.HasUserACL(disk, in.JailUID); err != nil || !ok {
		t.Fatalf("no ACL entry for uid %d on the attached drive (%v)", in.JailUID, err)
	}
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err := r.Wait(ctx, in.ID)
	if err != nil || exit == nil || exit.Signal == "" {
		t.Fatalf("wait = %+v, %v; want the VMM killed", exit, err)
	}
	if ok, _ := kunix.HasUserACL(disk, in.JailUID); ok {
		t.Errorf("the ACL entry for uid %d on a drive attached when the VMM died outlives its end", in.JailUID)
	}
	if left := JailLeftovers(r.Root(), in.ID); len(left) > 0 {
		t.Errorf("the dead VMM's jail left %q", left)
	}
	if err := r.Remove(ctx, in.ID, false); err != nil {
		t.Fatal(err)
	}
}

// TestSmallMonitorJailEndsRealVM is testJailEnds under the real jailer and
// Firecracker (KINDLING_FIRECRACKER, KINDLING_JAILER) with the small
// monitor.
func TestSmallMonitorJailEndsRealVM(t *testing.T) {
	asRootWithJailerDefault(t)
	testutil.Jailer(t) // skips without one
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("skipping: no /dev/kvm")
	}
	fc := testutil.Firecracker(t)
	dir := smallMonitorDir(t)
	r := openWith(t, WithMonitorExecutable(filepath.Join(dir, "sandbox.test")))
	testJailEnds(t, r, fc)
}
