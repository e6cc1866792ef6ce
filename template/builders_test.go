package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"

	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/sandbox"
)

// deadOwner returns the LabelBuildOwner value of a process that has ended.
func deadOwner(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, err := kunix.ProcessStartTime(cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", cmd.Process.Pid, start)
}

// TestCleanBuilders: a builder whose build process is gone (killed, so its
// own cleanup never ran) is removed, VMM and all; a builder whose build
// still runs, one whose owner cannot be read and a sandbox that is no
// builder are left alone.
func TestCleanBuilders(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	self := ownerLabel()
	if self == "" {
		t.Fatal("no owner label for this process")
	}
	var selfStart uint64
	if _, err := fmt.Sscanf(self, fmt.Sprintf("%d:%%d", os.Getpid()), &selfStart); err != nil {
		t.Fatalf("owner label %q: %v", self, err)
	}
	cases := []struct {
		id     string
		labels map[string]string
		gone   bool
	}{
		{"killed", map[string]string{LabelBuild: "t1", LabelBuildOwner: deadOwner(t)}, true},
		// The PID is this process's, the start time another's: a
		// recycled PID.
		{"recycled", map[string]string{LabelBuild: "t2", LabelBuildOwner: fmt.Sprintf("%d:%d", os.Getpid(), selfStart+1)}, true},
		{"building", map[string]string{LabelBuild: "t3", LabelBuildOwner: self}, false},
		{"unreadable", map[string]string{LabelBuild: "t4", LabelBuildOwner: "someone"}, false},
		{"plain", map[string]string{"app": "web"}, false},
	}
	var pids = map[string]int{}
	for _, c := range cases {
		spec := sandbox.Spec{ID: c.id, Kernel: haltGuest(t, "builder up"), Firecracker: fc, MemoryMiB: 64, Labels: c.labels}
		if _, err := r.rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		in, err := r.rt.Start(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		pids[c.id] = in.PID
	}
	removed, err := r.tpl.CleanBuilders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{"killed", "recycled"}; !slices.Equal(removed, want) {
		t.Errorf("CleanBuilders removed %v, want %v", removed, want)
	}
	var left []string
	for _, c := range cases {
		_, err := r.rt.Inspect(ctx, c.id)
		switch {
		case c.gone && !errors.Is(err, sandbox.ErrNotFound):
			t.Errorf("builder %s of a gone build: inspect after CleanBuilders: %v, want not found", c.id, err)
		case c.gone:
			if _, err := kunix.ProcessStartTime(pids[c.id]); !errors.Is(err, kunix.ErrNoProcess) {
				t.Errorf("builder %s removed but its VMM (pid %d) still runs", c.id, pids[c.id])
			}
		case err != nil:
			t.Errorf("sandbox %s should be left alone: %v", c.id, err)
		default:
			left = append(left, c.id)
		}
	}
	removeAll(t, r, left...)
}
