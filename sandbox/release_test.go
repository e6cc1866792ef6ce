package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRelease writes an executable at path that prints release and
// appends a line to count each time it runs.
func fakeRelease(t *testing.T, path, release, count string) {
	t.Helper()
	script := "#!/bin/sh\necho x >> " + count + "\necho 'Firecracker " + release + "'\n"
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func runs(t *testing.T, count string) int {
	t.Helper()
	b, err := os.ReadFile(count)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "x")
}

// A release is asked once per executable; a changed or replaced file, or
// a cache entry that cannot be read, is asked again.
func TestExecutableReleaseCache(t *testing.T) {
	r, _ := newRuntime(t, false)
	ctx := context.Background()
	dir := t.TempDir()
	fc, count := filepath.Join(dir, "firecracker"), filepath.Join(dir, "count")
	fakeRelease(t, fc, "v1.7.0", count)
	ask := func(want string, wantRuns int) {
		t.Helper()
		v, err := r.executableRelease(ctx, fc)
		if err != nil || v.String() != want {
			t.Fatalf("release = %v, %v; want %s", v, err, want)
		}
		if n := runs(t, count); n != wantRuns {
			t.Fatalf("the executable ran %d times, want %d", n, wantRuns)
		}
	}
	ask("1.7.0", 1)
	ask("1.7.0", 1) // from the cache

	// Replaced by a rename: another inode.
	fakeRelease(t, fc, "v1.14.2", count)
	ask("1.14.2", 2)
	ask("1.14.2", 2)

	// Written in place, even with its old modification time set back.
	fi, err := os.Stat(fc)
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(fc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fc, []byte(strings.Replace(string(script), "v1.14.2", "v1.14.3", 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(fc, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	ask("1.14.3", 3)

	// A cache entry that does not parse is asked again, and replaced.
	ents, err := os.ReadDir(filepath.Join(r.Root(), releasesDir))
	if err != nil || len(ents) == 0 {
		t.Fatalf("no cache entries: %v", err)
	}
	for _, e := range ents {
		if err := os.WriteFile(filepath.Join(r.Root(), releasesDir, e.Name()), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ask("1.14.3", 4)
	ask("1.14.3", 4)
}
