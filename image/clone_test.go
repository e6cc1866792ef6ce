package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// allocated returns the bytes of disk a file takes.
func allocated(t testing.TB, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// sparseBase writes a file of size bytes with data only in a few places.
func sparseBase(t testing.TB, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "base.ext4")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("kindling"), 8192) // 64 KiB
	for _, off := range []int64{0, size / 3, size - int64(len(chunk))} {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestClone(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	base := sparseBase(t, dir, size)
	want, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "copy.ext4")
	how, err := clone(base, dst)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the copy differs from the base")
	}
	if how == CloneSparse {
		if a := allocated(t, dst); a > 1<<20 {
			t.Errorf("sparse copy of %d data bytes takes %d bytes of disk", 3*64<<10, a)
		}
	}
	// Writing the copy leaves the base alone.
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("changed"), 0)
	f.Close()
	if b, _ := os.ReadFile(base); !bytes.Equal(b, want) {
		t.Error("writing the copy changed the base")
	}
	// An existing destination is not overwritten; a missing base fails.
	if err := Clone(base, dst); !errors.Is(err, os.ErrExist) {
		t.Errorf("Clone onto an existing file = %v, want ErrExist", err)
	}
	if err := Clone(filepath.Join(dir, "nosuch"), filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Clone of a missing base = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed Clone left its destination")
	}
	t.Logf("clone by %s", how)
}

// TestCloneAndGrow copies a built root filesystem and grows the copy.
func TestCloneAndGrow(t *testing.T) {
	testutil.CheckLeaks(t)
	needBuild(t)
	s := openStore(t)
	im := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "grow"), "grow:1"), ImportOptions{})
	base := im.RootFS[0].Path
	baseBytes, _ := os.ReadFile(base)
	dst := filepath.Join(t.TempDir(), "sandbox.ext4")
	if err := Clone(base, dst); err != nil {
		t.Fatal(err)
	}
	if a := allocated(t, dst); a > 8<<20 {
		t.Errorf("the copy of a small image takes %d bytes of disk", a)
	}
	ctx := context.Background()
	const newSize = 1 << 30
	if err := Grow(ctx, dst, newSize); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dst)
	if fi.Size() != newSize {
		t.Errorf("grown file is %d bytes, want %d", fi.Size(), newSize)
	}
	fsck(t, dst)
	m := regexp.MustCompile(`Block count:\s+(\d+)`).FindStringSubmatch(debugfs(t, dst, "stats"))
	if m == nil {
		t.Fatal("no block count")
	}
	if n, _ := strconv.ParseInt(m[1], 10, 64); n*4096 != newSize {
		t.Errorf("file system has %d blocks, want %d", n, newSize/4096)
	}
	if b, _ := os.ReadFile(base); !bytes.Equal(b, baseBytes) {
		t.Error("growing the copy changed the base")
	}
	for _, tt := range []struct {
		size int64
		kind error
	}{{1 << 20, ErrInvalid}, {newSize + 1, ErrInvalid}} {
		if err := Grow(ctx, dst, tt.size); !errors.Is(err, tt.kind) {
			t.Errorf("Grow(%d) = %v, want %v", tt.size, err, tt.kind)
		}
	}
	if err := Grow(ctx, dst, newSize); err != nil {
		t.Errorf("Grow to the same size = %v", err)
	}
}

// BenchmarkClone copies a 1 GiB root filesystem with 192 KiB of data, as
// a sandbox's own copy is made: ns/op is the time of one copy, and
// disk-bytes/op the disk it takes.
func BenchmarkClone(b *testing.B) {
	dir := b.TempDir()
	base := sparseBase(b, dir, 1<<30)
	var disk int64
	var how string
	b.ResetTimer()
	for i := range b.N {
		dst := filepath.Join(dir, "copy-"+strconv.Itoa(i))
		h, err := clone(base, dst)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		how = h
		disk += allocated(b, dst)
		os.Remove(dst)
		b.StartTimer()
	}
	b.ReportMetric(float64(disk)/float64(b.N), "disk-bytes/op")
	b.Logf("clone by %s", how)
}

// BenchmarkCloneFull is the naive baseline: a full copy of the same file.
func BenchmarkCloneFull(b *testing.B) {
	dir := b.TempDir()
	base := sparseBase(b, dir, 1<<30)
	b.ResetTimer()
	for i := range b.N {
		dst := filepath.Join(dir, "full-"+strconv.Itoa(i))
		in, _ := os.Open(base)
		out, _ := os.Create(dst)
		if err := copyAll(in, out, 1<<30); err != nil {
			b.Fatal(err)
		}
		in.Close()
		out.Close()
		b.StopTimer()
		os.Remove(dst)
		b.StartTimer()
	}
}
