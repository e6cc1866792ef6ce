package testutil

import (
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
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		mkfs, err = exec.LookPath("/usr/sbin/mkfs.ext4")
	}
	if err != nil {
		t.Skipf("skipping: mkfs.ext4 not found (install e2fsprogs): %v", err)
	}
	if sizeMiB < 1 {
		t.Fatalf("Ext4FromDir: size %d MiB: want at least 1", sizeMiB)
	}
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	f, err := os.Create(img)
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("size image: %v", err)
	}
	// -E root_owner: the image's root belongs to root whoever runs mkfs.
	out, err := exec.Command(mkfs, "-q", "-F", "-E", "root_owner=0:0", "-d", dir, img).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4 -d %s: %v\n%s", dir, err, out)
	}
	return img
}
