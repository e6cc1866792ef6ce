package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// EnvKernel names a Linux guest kernel (an uncompressed vmlinux with
// virtio-vsock, virtio-blk and ext4 built in) for the real-VM tests.
const EnvKernel = "KINDLING_KERNEL"

// realAgentTimeout bounds the wait for the agent of a real VM: a Linux
// boot, then the agent.
const realAgentTimeout = 60 * time.Second

// TestGuestRealVM runs the scenarios of the simulated-guest tests on a
// real Firecracker booting a real Linux kernel, plus what only a real VM
// can show: two clones of one snapshot draw different random bytes after
// re-init, and a restored guest's clock is set. It needs
// KINDLING_FIRECRACKER, KINDLING_KERNEL, /dev/kvm and a machine on which
// that kernel boots; elsewhere it skips and says which is missing.
func TestGuestRealVM(t *testing.T) {
	fc := testutil.Firecracker(t)
	kernel := os.Getenv(EnvKernel)
	if kernel == "" {
		t.Skipf("skipping real-VM guest test: set %s to a Linux guest kernel (no Linux guest boots on the machines kindling is developed on: their nested /dev/kvm boots kindling's tiny test guests, not Linux)", EnvKernel)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("skipping real-VM guest test: no /dev/kvm: %v", err)
	}
	testutil.CheckLeaks(t)
	root := testutil.ShortTempDir(t)
	r, err := Open(root, WithAgentTimeout(realAgentTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertRootEmpty(t, r) })
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{SizeMiB: 64 + bigFileSize()>>20})
	ctx := context.Background()
	id := "real"
	if _, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, KernelArgs: testutil.AgentBootArgs, Firecracker: fc,
		Rootfs: &Disk{Path: img}, MemoryMiB: 256, VCPUs: 2}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Remove(context.Background(), id, true) })
	in, err := r.Start(ctx, id)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("skipping real-VM guest test: the guest booted from %s never answered (this machine does not boot that Linux kernel?): %v", kernel, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Run("exec", func(t *testing.T) { testGuestExec(t, r, in.ID) })
	t.Run("files", func(t *testing.T) { testGuestFiles(t, r, in) })
	t.Run("clones differ", func(t *testing.T) { testRealClones(t, r, in) })
}

// testRealClones snapshots the running sandbox, restores two clones and
// checks that each has its own random stream and the host's time.
func testRealClones(t *testing.T, r *Runtime, in Info) {
	ctx := context.Background()
	snap := filepath.Join(t.TempDir(), "snap")
	if _, err := r.Snapshot(ctx, in.ID, snap, SnapshotOptions{Own: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.Kill(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	// Let the snapshot's clock fall behind, so that re-init has to set it.
	time.Sleep(2 * time.Second)
	var random []string
	for _, id := range []string{"real-a", "real-b"} {
		c, err := r.Restore(ctx, snap, RestoreOptions{ID: id, CopyOwnedDrives: true, Firecracker: in.Spec.Firecracker})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Remove(context.Background(), id, true) })
		code, out, _ := run(t, r, c.ID, ExecRequest{Args: []string{"sh", "-c", "head -c 32 /dev/urandom | od -An -tx1; date +%s; hostname"}})
		if code != 0 {
			t.Fatalf("clone %s: exit %d", id, code)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 3 || lines[len(lines)-1] != id {
			t.Fatalf("clone %s: output %q", id, out)
		}
		var guestNow int64
		if _, err := fmt.Sscan(lines[len(lines)-2], &guestNow); err != nil || time.Since(time.Unix(guestNow, 0)).Abs() > 2*time.Second {
			t.Errorf("clone %s: guest clock %q, host %d: not set by re-init", id, lines[len(lines)-2], time.Now().Unix())
		}
		random = append(random, strings.Join(lines[:len(lines)-2], ""))
	}
	if random[0] == random[1] {
		t.Fatalf("both clones drew the same random bytes after re-init: %s", random[0])
	}
}
