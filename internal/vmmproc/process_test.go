package vmmproc

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// startFake starts the fake Firecracker with settings (FAKEFC) and its API
// socket in a new directory.
func startFake(t *testing.T, settings string, console *testutil.SyncBuffer) (*Process, string) {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	sock := filepath.Join(dir, "api.sock")
	c := Command{Path: testutil.FakeFirecracker(t), Args: []string{"--api-sock", sock, "--id", "vm1"}, Dir: dir}
	if settings != "" {
		c.Env = []string{"FAKEFC=" + settings}
	}
	var w io.Writer
	if console != nil {
		w = console
	}
	p, err := Start(context.Background(), c, w)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.End(ctx, 0, true); err != nil {
			t.Error(err)
		}
	})
	return p, sock
}

func waitSocket(t *testing.T, sock string, p *Process) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		select {
		case <-p.Done():
			t.Fatalf("fake exited: %s: %s", p.Exit(), p.Stderr())
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
	}
	t.Fatal("the fake's API never answered")
}

func TestStartEnd(t *testing.T) {
	testutil.CheckLeaks(t)
	var console testutil.SyncBuffer
	p, sock := startFake(t, "", &console)
	waitSocket(t, sock, p)
	st, err := kunix.ProcessStartTime(p.PID())
	if err != nil || st != p.StartTime() {
		t.Errorf("start time %d, /proc says %d (%v)", p.StartTime(), st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	if err := p.End(ctx, 3*time.Second, false); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("SIGTERM took %v", took)
	}
	if e := p.Exit(); e.Unknown {
		t.Errorf("exit %+v, want a known status", e)
	}
	// The fake logs to stdout without --log-path: the console got it.
	if console.String() == "" {
		t.Error("nothing reached the console writer")
	}
}

func TestStartDiesAtOnce(t *testing.T) {
	testutil.CheckLeaks(t)
	p, _ := startFake(t, `{"die_at_start":true,"stderr":"why it died"}`, nil)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the fake did not exit")
	}
	if e := p.Exit(); e.Code != 1 || e.Signal != 0 || e.Unknown {
		t.Errorf("exit %+v (%s), want status 1", e, e)
	}
	if !strings.Contains(p.Stderr(), "why it died") {
		t.Errorf("stderr %q", p.Stderr())
	}
}

func TestEndKillsAfterGrace(t *testing.T) {
	testutil.CheckLeaks(t)
	p, sock := startFake(t, "", nil)
	waitSocket(t, sock, p)
	// A stopped VMM answers nothing; a kill must still end it.
	if err := syscall.Kill(p.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.End(ctx, 0, true); err != nil {
		t.Fatal(err)
	}
	if e := p.Exit(); e.Signal != int(syscall.SIGKILL) {
		t.Errorf("exit %s, want killed", e)
	}
}

func TestStartMissingExecutable(t *testing.T) {
	testutil.CheckLeaks(t)
	_, err := Start(context.Background(), Command{Path: "/nonexistent/firecracker"}, nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("start = %v, want not found", err)
	}
}

func TestInNetNSMissing(t *testing.T) {
	err := InNetNS("kindling-no-such-ns", func() error { return nil })
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("InNetNS = %v, want not found", err)
	}
	called := false
	if err := InNetNS("", func() error { called = true; return nil }); err != nil || !called {
		t.Errorf("InNetNS(\"\") = %v, called %v", err, called)
	}
}

func TestDeleteTap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create taps")
	}
	if err := DeleteTap("kltapnone0", ""); err != nil {
		t.Errorf("delete a missing tap: %v", err)
	}
	name := "kltapdel0"
	if _, err := netdev.CreateTap(context.Background(), netdev.TapSpec{Name: name}); err != nil {
		t.Skipf("create tap: %v", err)
	}
	t.Cleanup(func() { _ = netdev.DeleteTap(context.Background(), name, "") })
	if err := DeleteTap(name, ""); err != nil {
		t.Fatal(err)
	}
	if ok, err := netdev.TapExists(name, ""); ok || err != nil {
		t.Errorf("after DeleteTap: exists %v, %v", ok, err)
	}
	if err := DeleteTap("lo", ""); err == nil {
		t.Error("DeleteTap(lo) succeeded")
	}
}

func TestCleanJail(t *testing.T) {
	dir := t.TempDir()
	chroot := filepath.Join(dir, "fc", "vm1")
	if err := os.MkdirAll(filepath.Join(chroot, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(chroot, "root", "kernel"), []byte("k"), 0o600)
	cg := filepath.Join(dir, "cg")
	os.Mkdir(cg, 0o755)
	j := Jail{Chroots: []string{chroot, filepath.Join(dir, "other")}, Cgroups: []string{cg, filepath.Join(dir, "nocg")}}
	if err := CleanJail(j, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{chroot, cg} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
}
