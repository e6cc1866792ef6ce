package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Ext4FromDir builds an ext4 image of sizeMiB MiB holding the tree at dir
// (owners and modes kept), with mkfs.ext4 -d, in a temporary directory
// removed at test cleanup, and returns its path. It skips the test when
// mkfs.ext4 (Debian's e2fsprogs) is not installed.
func Ext4FromDir(t testing.TB, dir string, sizeMiB int) string {
	t.Helper()
	if _, err := findMkfs(); err != nil {
		t.Skipf("skipping: mkfs.ext4 not found (install e2fsprogs): %v", err)
	}
	if sizeMiB < 1 {
		t.Fatalf("Ext4FromDir: size %d MiB: want at least 1", sizeMiB)
	}
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := mkExt4(dir, img, sizeMiB); err != nil {
		t.Fatal(err)
	}
	return img
}

// findMkfs finds mkfs.ext4, also where /usr/sbin is not on PATH.
func findMkfs() (string, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		mkfs, err = exec.LookPath("/usr/sbin/mkfs.ext4")
	}
	return mkfs, err
}

// mkExt4 writes an ext4 image of sizeMiB MiB holding the tree at dir to
// img.
func mkExt4(dir, img string, sizeMiB int) error {
	mkfs, err := findMkfs()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 not found (install e2fsprogs): %w", err)
	}
	f, err := os.Create(img)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("size image: %w", err)
	}
	// -E root_owner: the image's root belongs to root whoever runs mkfs.
	out, err := exec.Command(mkfs, "-q", "-F", "-E", "root_owner=0:0", "-d", dir, img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 -d %s: %w\n%s", dir, err, out)
	}
	return nil
}
