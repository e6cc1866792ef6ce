package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateCopyRootfs: the copy is made in the sandbox's directory and
// recorded as its root drive, the source is left alone, the copy goes
// with the sandbox, and a failed copy leaves no sandbox.
func TestCreateCopyRootfs(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "x")
	src := filepath.Join(t.TempDir(), "base.ext4")
	if err := os.WriteFile(src, []byte("base"), 0o600); err != nil {
		t.Fatal(err)
	}
	copyFile := func(_ context.Context, from, to string) error {
		b, err := os.ReadFile(from)
		if err != nil {
			return err
		}
		return os.WriteFile(to, append(b, " copy"...), 0o600)
	}
	in, err := r.Create(ctx, Spec{ID: "own", Kernel: kernel, Firecracker: fc, Rootfs: &Disk{Path: src}}, CreateOptions{CopyRootfs: copyFile})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(r.Root(), "own", RootfsCopyFile)
	if in.Spec.Rootfs == nil || in.Spec.Rootfs.Path != dst {
		t.Fatalf("Create: rootfs %+v; want %s", in.Spec.Rootfs, dst)
	}
	again, err := r.Inspect(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	if again.Spec.Rootfs == nil || again.Spec.Rootfs.Path != dst {
		t.Fatalf("Inspect: rootfs %+v; want %s (recorded)", again.Spec.Rootfs, dst)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "base copy" {
		t.Fatalf("copy = %q, %v; want %q", b, err, "base copy")
	}
	if b, err := os.ReadFile(src); err != nil || string(b) != "base" {
		t.Fatalf("source = %q, %v; want it unchanged", b, err)
	}
	if err := r.Remove(ctx, "own", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy outlived its sandbox: %v", err)
	}

	boom := errors.New("copy failed")
	_, err = r.Create(ctx, Spec{ID: "fails", Kernel: kernel, Firecracker: fc, Rootfs: &Disk{Path: src}},
		CreateOptions{CopyRootfs: func(context.Context, string, string) error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("Create with a failing copy = %v; want %v", err, boom)
	}
	if _, err := os.Stat(filepath.Join(r.Root(), "fails")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed copy left the sandbox directory: %v", err)
	}
	if _, err := r.Create(ctx, Spec{Kernel: kernel, Firecracker: fc}, CreateOptions{CopyRootfs: copyFile}); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("CopyRootfs without a root filesystem = %v; want ErrInvalidSpec", err)
	}
}
