package monitor

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/store"
)

// newTestMonitor is a monitor of sandbox id in a fresh state root, with
// the sandbox's directory made.
func newTestMonitor(t *testing.T, id string, plan *Plan) *monitor {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := st.Dir(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return &monitor{st: st, id: id, plan: plan, log: slog.New(slog.DiscardHandler)}
}

// A sandbox's jail uid is given back only while the registry still names
// the sandbox, and the root's jail parents go only with its last sandbox.
func TestReleaseJail(t *testing.T) {
	reg := t.TempDir()
	base := t.TempDir()
	exe := filepath.Join(base, "firecracker")
	if err := os.Mkdir(exe, 0o700); err != nil {
		t.Fatal(err)
	}
	mon := newTestMonitor(t, "sb", &Plan{Jail: &Jail{
		IDFile: filepath.Join(reg, "4242"), IDLock: filepath.Join(reg, ".lock"), Parents: []string{exe, base},
	}})
	holder := filepath.Join(mon.st.Root(), "sb")
	other := t.TempDir()
	if err := os.Mkdir(filepath.Join(mon.st.Root(), "other"), 0o700); err != nil {
		t.Fatal(err)
	}

	// The uid is another sandbox's by now: it stays.
	if err := os.WriteFile(mon.plan.Jail.IDFile, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := mon.releaseJail(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(mon.plan.Jail.IDFile); err != nil || string(b) != other {
		t.Fatalf("another sandbox's uid file is now %q, %v", b, err)
	}
	if err := os.RemoveAll(holder); err != nil { // as the removal does
		t.Fatal(err)
	}
	mon.removeJailParents()
	if _, err := os.Stat(base); err != nil {
		t.Fatalf("the jail parents went while the root has another sandbox: %v", err)
	}

	// It is the sandbox's, and the sandbox is the root's last.
	if err := os.WriteFile(mon.plan.Jail.IDFile, []byte(holder), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mon.st.Root(), "other")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(holder, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := mon.releaseJail(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mon.plan.Jail.IDFile); !os.IsNotExist(err) {
		t.Errorf("the sandbox's uid file is left: %v", err)
	}
	mon.removeJailParents()
	if _, err := os.Stat(base); err != nil {
		t.Errorf("the jail parents went while the sandbox's own directory is there: %v", err)
	}
	if err := os.RemoveAll(holder); err != nil {
		t.Fatal(err)
	}
	mon.removeJailParents()
	if _, err := os.Stat(base); !os.IsNotExist(err) {
		t.Errorf("the root's jail parents are left: %v", err)
	}
	// Nothing to give back is fine.
	if err := mon.releaseJail(); err != nil {
		t.Errorf("a second release: %v", err)
	}
	mon.plan.Jail.IDLock = filepath.Join(t.TempDir(), "gone", ".lock")
	if err := mon.releaseJail(); err != nil {
		t.Errorf("a release without a registry: %v", err)
	}
}

// A sandbox with a slot network gets the plan's helper as a child for the
// VMM's life, in its directory under the monitor's name; ready returns
// once the helper is up and stop ends it. Without one, nothing runs.
func TestDNSHelper(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mon := newTestMonitor(t, "dns1", &Plan{DNS: true, Helper: self})
	dir, _ := mon.st.Dir("dns1")
	logPath := filepath.Join(dir, fakeDNSHelperLog)
	ready, stop := mon.startDNS()
	began := time.Now()
	ready()
	b, err := os.ReadFile(logPath)
	if err != nil || string(b) != "up dns1 "+filepath.Base(mon.st.Root())+"\n" {
		t.Fatalf("after ready (%v) the helper's log is %q, %v", time.Since(began), b, err)
	}
	pid := helperPID(t, dir)
	stop()
	stop() // idempotent
	if b, _ := os.ReadFile(logPath); !strings.HasSuffix(string(b), "stopped\n") {
		t.Errorf("after stop the helper's log is %q; want it stopped by SIGTERM", b)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the helper %d runs on after stop", pid)
	}

	// No slot network: no helper, and the calls do nothing.
	mon = newTestMonitor(t, "dns2", &Plan{Helper: self})
	ready, stop = mon.startDNS()
	ready()
	stop()
	dir, _ = mon.st.Dir("dns2")
	if _, err := os.Stat(filepath.Join(dir, fakeDNSHelperLog)); !os.IsNotExist(err) {
		t.Errorf("a helper ran for a sandbox without a slot network: %v", err)
	}

	// In-process through the hook.
	mon = newTestMonitor(t, "dns3", &Plan{DNS: true, Helper: "/nonexistent"})
	var started, stopped bool
	mon.hooks.StartDNS = func(st *store.Store, id string, _ *slog.Logger) func() {
		started = id == "dns3"
		return func() { stopped = true }
	}
	ready, stop = mon.startDNS()
	ready()
	if !started {
		t.Error("the hook did not start the forwarder of dns3")
	}
	stop()
	if !stopped {
		t.Error("the hook's forwarder was not stopped")
	}
}

// helperPID finds the helper running in dir with the monitor's argv[0].
func helperPID(t *testing.T, dir string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if cwd == dir && strings.HasPrefix(string(cmdline), Arg0+"\x00") {
			return pid
		}
	}
	t.Fatalf("no helper runs in %s as %s", dir, Arg0)
	return 0
}
