package image

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// xfsMount makes an XFS file system with reflink on, in a file of the
// test's temporary directory, loop-mounts it and returns the mount point;
// the test's cleanup unmounts it and checks the loop device is gone. It
// skips, saying why, without root, mkfs.xfs or loop devices.
func xfsMount(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting an XFS file needs root")
	}
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		t.Skip("mkfs.xfs not found: install xfsprogs")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse; 320 MiB is above the smallest XFS recent mkfs.xfs makes.
	err = f.Truncate(320 << 20)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	// -o loop: mount(8) attaches a loop device with autoclear, so that
	// the unmount detaches it.
	if out, err := exec.Command("mount", "-t", "xfs", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount an XFS file here: %v: %s", err, bytes.TrimSpace(out))
	}
	dev := mountSource(t, mnt)
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			return
		}
		// autoclear detaches the loop device once it is unused.
		name := filepath.Base(dev)
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
			if err != nil || strings.TrimSpace(string(b)) != img {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("loop device %s still attached to %s after the unmount; detaching it", dev, img)
				_ = exec.Command("losetup", "-d", dev).Run()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return mnt
}

// mountSource returns the device mounted at mnt, from mountinfo.
func mountSource(t *testing.T, mnt string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	src := ""
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - TYPE SOURCE SUPER
		for i, fl := range fields {
			if fl == "-" && len(fields) > i+2 && fields[4] == mnt {
				src = fields[i+2] // the last mount there wins
			}
		}
	}
	if src == "" {
		t.Fatalf("%s is not in mountinfo", mnt)
	}
	return src
}

// freeBytes is the free space of the file system holding dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestCloneReflink copies a root filesystem file with 64 MiB of data on a
// loop-mounted XFS with reflink: Clone uses FICLONE, the copy takes
// (almost) no new disk and reads the same, and writing it leaves the base
// alone.
func TestCloneReflink(t *testing.T) {
	testutil.CheckLeaks(t)
	mnt := xfsMount(t)
	base := filepath.Join(mnt, "base.ext4")
	f, err := os.Create(base)
	if err != nil {
		t.Fatal(err)
	}
	const size, data = 256 << 20, 64 << 20
	chunk := bytes.Repeat([]byte("kindling reflink"), 1<<16) // 1 MiB
	for off := int64(0); off < data; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off*2); err != nil { // data every other MiB
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := fileSum(t, base)

	syscall.Sync()
	before := freeBytes(t, mnt)
	dst := filepath.Join(mnt, "sandbox.ext4")
	t0 := time.Now()
	how, err := CloneMethod(base, dst)
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Sync()
	used := before - freeBytes(t, mnt)
	t.Logf("clone of a %d MiB file with %d MiB of data: %s, %v, %d KiB of new disk", size>>20, data>>20, how, took, used>>10)
	if how != CloneReflink {
		t.Fatalf("Clone on XFS with reflink=1 made a %s copy, want %s", how, CloneReflink)
	}
	if used > 1<<20 {
		t.Errorf("the reflink copy took %d bytes of new disk, want at most 1 MiB", used)
	}
	if got := fileSum(t, dst); got != want {
		t.Fatal("the copy reads differently from the base")
	}
	// Writing the copy unshares only what is written.
	w, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, base) != want {
		t.Error("writing the copy changed the base")
	}
	if err := Clone(base, dst); !errors.Is(err, os.ErrExist) {
		t.Errorf("Clone onto an existing copy = %v, want ErrExist", err)
	}
}
