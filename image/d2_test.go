package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/store"
)

// D2: an image store another user could write is refused when it is
// opened, with one line saying how to fix it: a store (or one of its
// directories) owned by another user, one others may write, one that is
// a symbolic link. Whoever could write it would choose the root file
// systems guests boot.
func TestD2ImageStoreOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes directories owned by uid 65534")
	}
	tests := []struct {
		name string
		// prepare breaks a store made in dir and returns the directory
		// the refusal must name.
		prepare func(t *testing.T, dir string) string
		fix     string
	}{
		{"store owned by another user", func(t *testing.T, dir string) string {
			chown(t, dir, 65534)
			return dir
		}, "chown 0 DIR"},
		{"images directory owned by another user", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, imagesDir)
			chown(t, p, 65534)
			return p
		}, "chown 0 DIR"},
		{"locks directory owned by another user", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, locksDir)
			chown(t, p, 65534)
			return p
		}, "chown 0 DIR"},
		{"store writable by others", func(t *testing.T, dir string) string {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "chmod go-w DIR"},
		{"build directory a symbolic link", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, tmpDir)
			elsewhere := t.TempDir()
			chown(t, elsewhere, 65534)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(elsewhere, p); err != nil {
				t.Fatal(err)
			}
			return p
		}, "kindling does not follow links in its state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "images")
			if _, err := Open(dir); err != nil {
				t.Fatalf("open a new store: %v", err)
			}
			bad := tt.prepare(t, dir)
			_, err := Open(dir)
			fix := strings.ReplaceAll(tt.fix, "DIR", bad)
			if !errors.Is(err, store.ErrNotPrivate) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), fix) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("open %s: %v; want one line refusing %s with %q", tt.name, err, bad, fix)
			}
		})
	}
}

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Chown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// D2, per image: an image's own directory that another user owns or may
// write, or a record that is a symbolic link, is refused when the image
// is read, not used.
func TestD2ImageDirectoryOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes directories owned by uid 65534")
	}
	const h = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name    string
		prepare func(t *testing.T, imageDir string)
		want    string
	}{
		{"image directory owned by another user", func(t *testing.T, d string) { chown(t, d, 65534) }, "is owned by uid 65534"},
		{"image directory writable by others", func(t *testing.T, d string) {
			if err := os.Chmod(d, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "can be written by others"},
		{"record a symbolic link", func(t *testing.T, d string) {
			p := filepath.Join(d, recordFile)
			other := filepath.Join(t.TempDir(), "image.json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, p); err != nil {
				t.Fatal(err)
			}
		}, "link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(filepath.Join(t.TempDir(), "images"))
			if err != nil {
				t.Fatal(err)
			}
			d := s.imageDir(h)
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := s.save(Image{ID: "sha256:" + h, Platform: "linux/amd64"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.load(h); err != nil {
				t.Fatalf("load a sound image: %v", err)
			}
			tt.prepare(t, d)
			_, err = s.load(h)
			if !errors.Is(err, store.ErrNotPrivate) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("load: %v; want one line refusing it (%q)", err, tt.want)
			}
		})
	}
}
