package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// tmpfsJailRuntime is a runtime, as root under the fake jailer by
// default, whose state root is a tmpfs the test mounts (and unmounts at
// its end): on another filesystem than the jailer's chroot base, as the
// default /run/kindling is on most hosts.
func tmpfsJailRuntime(t *testing.T) (*Runtime, string) {
	t.Helper()
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	root := testutil.ShortTempDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "kdjailcopy", root).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", root).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, out)
		}
	})
	if same, err := onChrootBaseFS(root, jailChrootBase); err != nil || same {
		t.Fatalf("the tmpfs state root on the chroot base's filesystem: %v, %v", same, err)
	}
	r, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		assertRootEmpty(t, r)
		if left := JailLeftoversOfRoot(r.Root()); len(left) > 0 {
			t.Errorf("the state root's jails left %q", left)
		}
		if _, err := os.Lstat(jailCopiesDir(r.Root())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the copy directories' parent %s is left (%v)", jailCopiesDir(r.Root()), err)
		}
	})
	return r, fc
}

// appendCopy is a CopyRootfs that copies src to dst and appends " copy".
func appendCopy(_ context.Context, src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, append(b, " copy"...), 0o600)
}

// checkOnChrootBaseFS fails the test unless p is on the filesystem of the
// jailer's chroot base.
func checkOnChrootBaseFS(t *testing.T, p string) {
	t.Helper()
	var st, bst syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(jailChrootBase, &bst); err != nil {
		t.Fatal(err)
	}
	if st.Dev != bst.Dev {
		t.Errorf("%s is on device %d, the chroot base %s on %d", p, st.Dev, jailChrootBase, bst.Dev)
	}
}

// TestD4JailedRootfsCopyOffTmpfsRoot: with the state root on a tmpfs, a
// jailed sandbox with its own root filesystem copy (run IMAGE) gets the
// copy on the chroot base's filesystem, recorded, starts, keeps the copy
// across stop and start, and rm leaves nothing of it; a caller's own
// writable drive on the tmpfs is still refused with the fix.
func TestD4JailedRootfsCopyOffTmpfsRoot(t *testing.T) {
	r, fc := tmpfsJailRuntime(t)
	ctx := context.Background()
	kernel := haltGuest(t, "jailed copy")
	// The source is on the tmpfs too, as the image store under the state
	// root is: only read, it is not refused.
	src := filepath.Join(r.Root(), ".base.ext4")
	if err := os.WriteFile(src, []byte("base"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := "d4copy"
	in, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc, Rootfs: &Disk{Path: src}}, CreateOptions{CopyRootfs: appendCopy})
	if err != nil {
		t.Fatal(err)
	}
	if in.Spec.Jailer == "" {
		t.Fatal("as root the sandbox was not given the jailer")
	}
	cd := filepath.Join(jailCopiesDir(r.Root()), id)
	dst := filepath.Join(cd, RootfsCopyFile)
	if in.Spec.Rootfs == nil || in.Spec.Rootfs.Path != dst {
		t.Fatalf("rootfs %+v; want the copy %s", in.Spec.Rootfs, dst)
	}
	var rec record
	if err := r.st.Load(id, &rec); err != nil || rec.CopyDir != cd {
		t.Fatalf("record's copy directory %q (%v); want %s", rec.CopyDir, err, cd)
	}
	checkOnChrootBaseFS(t, dst)
	for i := range 2 {
		if _, err := r.Start(ctx, id); err != nil {
			r.Remove(ctx, id, true)
			t.Fatalf("start %d: %v", i+1, err)
		}
		if err := r.Stop(ctx, id); err != nil {
			t.Fatalf("stop %d: %v", i+1, err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != "base copy" {
			t.Fatalf("after stop %d the copy holds %q, %v; want it kept", i+1, b, err)
		}
	}
	if err := r.Remove(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(cd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rm left the copy directory %s (%v)", cd, err)
	}

	// The caller's own writable drive on the tmpfs is not moved: refused.
	own := filepath.Join(r.Root(), ".own.ext4")
	if err := os.WriteFile(own, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(own)
	_, err = r.Create(ctx, Spec{ID: "d4own", Kernel: kernel, Firecracker: fc, Rootfs: &Disk{Path: own}}, CreateOptions{})
	if err == nil {
		if _, err = r.Start(ctx, "d4own"); err == nil {
			r.Stop(ctx, "d4own")
		}
		if rerr := r.Remove(ctx, "d4own", true); rerr != nil {
			t.Errorf("remove d4own: %v", rerr)
		}
	}
	if err == nil || !errors.Is(err, ErrInvalid) {
		t.Errorf("a writable drive of the caller's on the tmpfs: %v; want it refused", err)
	}
}

// TestD4JailedRootfsCopyAutoRemoved: the monitor's auto-remove takes the
// copy directory with the sandbox.
func TestD4JailedRootfsCopyAutoRemoved(t *testing.T) {
	r, fc := tmpfsJailRuntime(t)
	ctx := context.Background()
	off := testutil.GuestKernel(t, guest.Options{Message: "jailed copy off", Mode: guest.PowerOff})
	// The source is on the tmpfs too, as the image store under the state
	// root is: only read, it is not refused.
	src := filepath.Join(r.Root(), ".base.ext4")
	if err := os.WriteFile(src, []byte("base"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := "d4auto"
	if _, err := r.Create(ctx, Spec{ID: id, Kernel: off, Firecracker: fc, Rootfs: &Disk{Path: src}}, CreateOptions{CopyRootfs: appendCopy, AutoRemove: true}); err != nil {
		t.Fatal(err)
	}
	cd := filepath.Join(jailCopiesDir(r.Root()), id)
	if _, err := os.Stat(cd); err != nil {
		t.Fatalf("copy directory: %v", err)
	}
	in, err := r.Start(ctx, id)
	if err != nil {
		r.Remove(ctx, id, true)
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := r.Inspect(ctx, id)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			r.Remove(ctx, id, true)
			t.Fatalf("the powered-off sandbox was not auto-removed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The monitor removes the sandbox, then exits: its files on the
	// tmpfs (monitor.log) stay open until it has, and a directory it
	// removed is no longer its cwd's path for waitNoProcesses.
	waitExited(t, in.MonitorPID)
	waitNoProcesses(t, "after the auto-removed sandbox ended", r.Root())
	if _, err := os.Lstat(cd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("auto-remove left the copy directory %s (%v)", cd, err)
	}
}

// TestD4JailedRootfsCopyLostRecord: a jailed sandbox whose record is lost
// has its copy directory counted as a leftover of its state root, and
// gc removes it, found by its place.
func TestD4JailedRootfsCopyLostRecord(t *testing.T) {
	r, fc := tmpfsJailRuntime(t)
	ctx := context.Background()
	src := filepath.Join(r.Root(), ".base.ext4")
	if err := os.WriteFile(src, []byte("base"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := "d4lost"
	in, err := r.Create(ctx, Spec{ID: id, Kernel: haltGuest(t, "lost"), Firecracker: fc, Rootfs: &Disk{Path: src}}, CreateOptions{CopyRootfs: appendCopy})
	if err != nil {
		t.Fatal(err)
	}
	cd := filepath.Join(jailCopiesDir(r.Root()), id)
	want := "drive copies " + cd
	if left := JailLeftoversOfRoot(r.Root()); len(left) != 1 || left[0] != want {
		t.Errorf("leftovers of the root with a sandbox = %q; want [%q]", left, want)
	}
	// A corrupt record, then none at all.
	for i, lose := range []func(state string) error{
		func(state string) error { return os.WriteFile(state, []byte("{not json"), 0o600) },
		os.Remove,
	} {
		if i > 0 {
			if _, err := r.Create(ctx, Spec{ID: id, Kernel: haltGuest(t, "lost"), Firecracker: fc, Rootfs: &Disk{Path: src}}, CreateOptions{CopyRootfs: appendCopy}); err != nil {
				t.Fatal(err)
			}
		}
		if err := lose(filepath.Join(in.Dir, "state.json")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.GC(ctx); err != nil {
			t.Fatalf("gc: %v", err)
		}
		if _, err := os.Lstat(cd); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("gc of the sandbox with its record lost (%d) left %s (%v)", i, cd, err)
		}
	}
}
