package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// D7: a descriptor kindlingd inherited without close-on-exec (a pipe of
// whoever started it) is not passed on to the monitor and the VMM of the
// sandboxes it starts.
func TestD7InheritedDescriptorNotPassedToSandboxes(t *testing.T) {
	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	pipe := fmt.Sprintf("pipe:[%d]", st.Ino)
	cmd := exec.Command(binary(t), "--root", root)
	cmd.ExtraFiles = []*os.File{nil, w} // fd 4, not close-on-exec in kindlingd
	d := startCmd(t, root, filepath.Join(root, socketName), cmd)
	if !holds(d.cmd.Process.Pid, pipe) {
		t.Fatalf("kindlingd does not hold the inherited %s: the test passes it nothing", pipe)
	}
	c := d.client(t)
	ctx := context.Background()
	if _, err := c.Create(ctx, sandbox.Spec{ID: "d7", Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := c.Start(ctx, "d7")
	if err != nil {
		t.Fatal(err)
	}
	procs := processesOf(root)
	if len(procs) < 2 {
		t.Fatalf("want the sandbox's monitor and VMM among the processes of the root, got %q", procs)
	}
	found := false
	for _, p := range procs {
		pid, _ := strconv.Atoi(strings.Fields(p)[0])
		if pid == d.cmd.Process.Pid {
			continue
		}
		found = found || pid == info.PID
		if holds(pid, pipe) {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			t.Errorf("process %d (%s) holds kindlingd's inherited %s", pid, exe, pipe)
		}
	}
	if !found {
		t.Errorf("the VMM (pid %d) is not among the processes of the root %q", info.PID, procs)
	}
}

// holds reports whether process pid has a descriptor open on target (a
// /proc/PID/fd link's text, such as "pipe:[123]").
func holds(pid int, target string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == target {
			return true
		}
	}
	return false
}
