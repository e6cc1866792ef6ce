package install

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

func TestFind(t *testing.T) {
	dir := t.TempDir()
	isolate(t, dir)
	pathDir := os.Getenv("PATH")
	exe := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	find := func(k Kind, given string) string {
		t.Helper()
		p, err := Find(k, given)
		if err != nil {
			t.Fatalf("Find(%s, %q): %v", k, given, err)
		}
		return p
	}

	// Nothing anywhere: the error names every way to give one.
	_, err := Find(Firecracker, "")
	var nf *NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Find with nothing: %v", err)
	}
	const msg = "no firecracker executable found: give --firecracker PATH, set KINDLING_FIRECRACKER, put firecracker on PATH, or run 'kindling install firecracker'"
	if err.Error() != msg {
		t.Errorf("error %q\nwant  %q", err, msg)
	}
	if _, err := Find(Jailer, ""); err == nil || !strings.Contains(err.Error(), "set KINDLING_JAILER, put jailer on PATH") {
		t.Errorf("Find(jailer) with nothing: %v", err)
	}

	// Installed, last resort: by its versioned path.
	inst := exe(filepath.Join(dir, "v1.7.0", "firecracker"))
	exe(filepath.Join(dir, "v1.7.0", "jailer"))
	if err := os.Symlink("v1.7.0", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if p := find(Firecracker, ""); p != inst {
		t.Errorf("installed: %q, want %q", p, inst)
	}
	// PATH before it.
	onPath := exe(filepath.Join(pathDir, "firecracker"))
	if p := find(Firecracker, ""); p != onPath {
		t.Errorf("PATH: %q, want %q", p, onPath)
	}
	// The environment before PATH; the jailer's own variable.
	t.Setenv(EnvFirecracker, "/env/firecracker")
	t.Setenv(EnvJailer, "/env/jailer")
	if p := find(Firecracker, ""); p != "/env/firecracker" {
		t.Errorf("env: %q", p)
	}
	if p := find(Jailer, ""); p != "/env/jailer" {
		t.Errorf("env jailer: %q", p)
	}
	// The flag before all, made absolute.
	wd, _ := os.Getwd()
	if p := find(Firecracker, "fc"); p != filepath.Join(wd, "fc") {
		t.Errorf("given: %q", p)
	}
	// An installed executable that is not executable is no executable.
	t.Setenv(EnvFirecracker, "")
	os.Remove(onPath)
	os.Chmod(inst, 0o644)
	if _, err := Find(Firecracker, ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("non-executable install found: %v", err)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv(EnvDir, "")
	t.Setenv("HOME", "/home/someone")
	t.Setenv("XDG_DATA_HOME", "")
	d, err := DefaultDir()
	want := "/home/someone/.local/share/kindling/bin"
	if os.Geteuid() == 0 {
		want = SystemDir
	}
	if err != nil || d != want {
		t.Errorf("DefaultDir() = %q, %v; want %q", d, err, want)
	}
	t.Setenv(EnvDir, "/opt/fc")
	if d, _ := DefaultDir(); d != "/opt/fc" {
		t.Errorf("with %s: %q", EnvDir, d)
	}
	if got := searchDirs(); !slices.Equal(got, []string{"/opt/fc"}) {
		t.Errorf("searchDirs with %s: %q", EnvDir, got)
	}
}
