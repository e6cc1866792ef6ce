package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// sparesOf returns the PIDs of the spare monitors serving root.
func sparesOf(root string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if !bytes.Equal(cmdline, []byte(monitor.Arg0+"\x00"+monitor.SpareArg+"\x00")) {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(environ, []byte("\x00"+monitor.EnvRoot+"="+root+"\x00")) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// waitSpares waits until root has n spare monitors and returns them.
func waitSpares(t *testing.T, root string, n int) []int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pids := sparesOf(root)
		if len(pids) == n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("root %s has spare monitors %v after 20 s, want %d", root, pids, n)
		}
	}
}

// kindlingd keeps --spare-monitors monitors ready; a start through the API
// claims one, which is replaced; SIGTERM ends the spares and leaves the
// sandbox running; with 0 there are none.
func TestSpareMonitors(t *testing.T) {
	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	d := startDaemon(t, root, "--spare-monitors", "3")
	spares := waitSpares(t, root, 3)
	ctx := context.Background()
	c := d.client(t)
	if _, err := c.Create(ctx, sandbox.Spec{ID: "sp", Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := c.Start(ctx, "sp")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(spares, in.MonitorPID) {
		t.Errorf("the sandbox's monitor %d is not one of the spares %v", in.MonitorPID, spares)
	}
	after := waitSpares(t, root, 3)
	if slices.Contains(after, in.MonitorPID) {
		t.Errorf("the claimed monitor %d is still counted a spare: %v", in.MonitorPID, after)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t, 15*time.Second); err != nil {
		t.Fatalf("kindlingd exit: %v\n%s", err, d.output)
	}
	if left := sparesOf(root); len(left) > 0 {
		t.Errorf("spare monitors %v left after kindlingd exited", left)
	}
	if got, err := openRuntime(t, root).Inspect(ctx, "sp"); err != nil || got.Status != sandbox.Running || got.MonitorPID != in.MonitorPID {
		t.Errorf("after kindlingd exited the sandbox is %s with monitor %d (%v); want running with %d", got.Status, got.MonitorPID, err, in.MonitorPID)
	}

	d2 := startDaemon(t, root, "--spare-monitors", "0")
	time.Sleep(200 * time.Millisecond)
	if pids := sparesOf(root); len(pids) > 0 {
		t.Errorf("--spare-monitors 0 started spares %v", pids)
	}
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = d2.wait(t, 15*time.Second)
}
