package container

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withStdin runs fn with os.Stdin reading data.
func withStdin(t *testing.T, data []byte, fn func() error) error {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.Write(data)
		w.Close()
	}()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old; r.Close() }()
	return fn()
}

func tarOf(t *testing.T, entries []*tar.Header, bodies map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if b, ok := bodies[h.Name]; ok {
			h.Size = int64(len(b))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(bodies[h.Name]))
	}
	tw.Close()
	return buf.Bytes()
}

// unpack keeps what a root filesystem needs: owners, modes with set-id
// bits, times, symbolic and hard links, FIFOs; and writes nothing outside
// its directory.
func TestUnpack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: unpack sets owners and makes device nodes (needs root)")
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	data := tarOf(t, []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime},
		{Name: "bin/app", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 12, Gid: 34, ModTime: mtime},
		{Name: "bin/again", Typeflag: tar.TypeLink, Linkname: "bin/app"},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "/bin/app"},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "tmp/fifo", Typeflag: tar.TypeFifo, Mode: 0o600},
	}, map[string]string{"bin/app": "binary"})
	dir := filepath.Join(t.TempDir(), "root")
	if err := withStdin(t, data, func() error { return unpack(dir) }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/app"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 || st.Uid != 12 || st.Gid != 34 || !fi.ModTime().Equal(mtime) || st.Nlink != 2 {
		t.Errorf("bin/app: mode %v uid %d gid %d mtime %v nlink %d", fi.Mode(), st.Uid, st.Gid, fi.ModTime(), st.Nlink)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "/bin/app" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "tmp/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("tmp/fifo: %v, %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v, %v; want sticky", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin")); err != nil || !fi.ModTime().Equal(mtime) {
		t.Errorf("bin's mtime: %v, %v; want %v", fi.ModTime(), err, mtime)
	}
}

func TestUnpackStaysInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: unpack sets owners (needs root)")
	}
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	tests := []struct {
		name    string
		entries []*tar.Header
	}{
		{"dot-dot", []*tar.Header{{Name: "../outside", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"through a symlink", []*tar.Header{
			{Name: "up", Typeflag: tar.TypeSymlink, Linkname: ".."},
			{Name: "up/outside", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"hard link to a host file", []*tar.Header{{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "../../../../etc/passwd"}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(base, "root"+string(rune('a'+i)))
			err := withStdin(t, tarOf(t, tt.entries, nil), func() error { return unpack(dir) })
			if _, serr := os.Lstat(outside); serr == nil {
				t.Fatalf("unpack wrote %s outside its directory", outside)
			}
			if tt.name == "dot-dot" {
				// "../outside" is cleaned to "outside", inside.
				if err != nil {
					t.Fatalf("unpack: %v", err)
				}
				if _, err := os.Stat(filepath.Join(dir, "outside")); err != nil {
					t.Errorf("cleaned entry not inside: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "unpack") {
				t.Errorf("unpack = %v, want an error", err)
			}
		})
	}
}
