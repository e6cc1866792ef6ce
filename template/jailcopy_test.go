package template

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// TestD4BuildAndCloneJailedOffTmpfsRoot: with the state root on a tmpfs
// (another filesystem than the jailer's chroot base, as the default
// /run/kindling is on most hosts) a jailed template builder and its
// jailed clones get their drive copies on the chroot base's filesystem,
// and removing them leaves nothing there.
func TestD4BuildAndCloneJailedOffTmpfsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jailer policy applies to root")
	}
	t.Setenv(sandbox.EnvNoJailer, "")
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	root := testutil.ShortTempDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1g,mode=0700", "kdjailtpl", root).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", root).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, out)
		}
	})
	r := newImageRigIn(t, root)
	t.Cleanup(func() {
		if left := sandbox.JailLeftoversOfRoot(root); len(left) > 0 {
			t.Errorf("the state root's jails left %q", left)
		}
	})
	var jst, rst syscall.Stat_t
	if err := syscall.Stat("/srv/jailer", &jst); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(root, &rst); err != nil || rst.Dev == jst.Dev {
		t.Fatalf("the tmpfs state root is on the chroot base's filesystem (%v)", err)
	}
	ctx := context.Background()
	if _, err := r.tpl.Build(ctx, "jailed", BuildOptions{Spec: r.spec, Image: r.im.ID,
		Run: []string{"echo built > /srv/motd"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.tpl.Remove(context.Background(), "jailed", true); err != nil {
			t.Errorf("remove template: %v", err)
		}
	})
	id := "jc1"
	in, err := r.tpl.Run(ctx, "jailed", CloneOptions{ID: id, Firecracker: r.fc})
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			r.rt.Remove(context.Background(), id, true)
		}
	})
	if in.Spec.Jailer == "" || in.Spec.Rootfs == nil {
		t.Fatalf("clone: jailer %q, rootfs %+v: want it jailed with a root drive", in.Spec.Jailer, in.Spec.Rootfs)
	}
	disk := in.Spec.Rootfs.Path
	var dst syscall.Stat_t
	if err := syscall.Stat(disk, &dst); err != nil || dst.Dev != jst.Dev || !strings.HasPrefix(disk, "/srv/jailer/") {
		t.Fatalf("the clone's root drive %s (%v) is not its copy on the chroot base's filesystem", disk, err)
	}
	if code, out := execOut(t, r.rt, id, "sh", "-c", "cat /srv/motd"); code != 0 || out != "built\n" {
		t.Errorf("clone: exit %d, output %q; want the setup's file", code, out)
	}
	if err := r.rt.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	removed = true
	if _, err := os.Lstat(filepath.Dir(disk)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rm left the clone's copy directory %s (%v)", filepath.Dir(disk), err)
	}
}
