package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestSaveReplacesAtomically(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "a", record{Count: 1})
	l := mustLock(t, s, "a")
	defer l.Unlock()
	if err := l.Save(record{Count: 2}); err != nil {
		t.Fatalf("Save: %v", err)
	}
	var r record
	if err := s.Load("a", &r); err != nil || r.Count != 2 {
		t.Fatalf("Load = %+v, %v", r, err)
	}
	if got := names(t, l.Dir()); !slices.Equal(got, []string{stateFile}) {
		t.Errorf("sandbox directory holds %q, want only %s", got, stateFile)
	}
	checkMode(t, filepath.Join(l.Dir(), stateFile), 0o600)
}

func TestStaleTempFile(t *testing.T) {
	// A writer that crashed between creating its temporary file and the
	// rename leaves the file behind: Load ignores it, Clean removes it.
	s := newStore(t)
	mustCreate(t, s, "a", record{Count: 1})
	stale := filepath.Join(s.dir("a"), tempPrefix+"123456")
	if err := os.WriteFile(stale, []byte(`{"version": 1, "data": {"cou`), 0o600); err != nil {
		t.Fatal(err)
	}
	var r record
	if err := s.Load("a", &r); err != nil || r.Count != 1 {
		t.Fatalf("Load = %+v, %v, want the old state", r, err)
	}
	ents, err := s.List()
	if err != nil || len(ents) != 1 || ents[0].Incomplete {
		t.Fatalf("List = %+v, %v", ents, err)
	}

	l := mustLock(t, s, "a")
	removed, err := s.Clean()
	if err != nil || len(removed) != 0 {
		t.Fatalf("Clean while locked = %q, %v, want nothing removed", removed, err)
	}
	l.Unlock()

	removed, err = s.Clean()
	if err != nil || !slices.Equal(removed, []string{stale}) {
		t.Fatalf("Clean = %q, %v, want %q", removed, err, stale)
	}
	if got := names(t, s.dir("a")); !slices.Equal(got, []string{stateFile}) {
		t.Errorf("after Clean the directory holds %q", got)
	}
}

func TestCleanIncomplete(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "done", record{})
	for _, id := range []string{"crashed", "busy"} {
		if err := os.Mkdir(s.dir(id), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	busy := mustLock(t, s, "busy") // a create under way holds its lock
	defer busy.Unlock()
	// A lock file whose sandbox is gone, left by a crash inside Remove.
	if err := os.WriteFile(s.lockPath("gone"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	removed, err := s.Clean()
	if err != nil {
		t.Fatalf("Clean: %v", err)
	}
	slices.Sort(removed)
	want := []string{s.lockPath("gone"), s.dir("crashed")} // crashed's lock file goes with its directory
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("Clean removed %q, want %q", removed, want)
	}
	ents, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{"busy", "done"}) {
		t.Errorf("after Clean List = %q, want busy and done", ids)
	}
	if got := names(t, filepath.Join(s.Root(), locksDir)); !slices.Equal(got, []string{"busy", "done"}) {
		t.Errorf("lock files after Clean: %q", got)
	}
}

// mountTmpfs mounts a tmpfs of the given size on a fresh directory and
// unmounts it at cleanup; it skips the test where that is not allowed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir, err := os.MkdirTemp("", "kstore")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			return
		}
		if err := os.Remove(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

func TestDiskFull(t *testing.T) {
	huge := record{Name: strings.Repeat("x", 256<<10)} // far above the tmpfs size
	t.Run("save", func(t *testing.T) {
		testutil.CheckLeaks(t)
		s, err := Open(filepath.Join(mountTmpfs(t, "64k"), "root"))
		if err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, "a", record{Count: 1})
		l := mustLock(t, s, "a")
		defer l.Unlock()
		err = l.Save(huge)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Save = %v, want ENOSPC", err)
		}
		var r record
		if err := s.Load("a", &r); err != nil || r.Count != 1 {
			t.Fatalf("Load = %+v, %v, want the old state intact", r.Count, err)
		}
		if got := names(t, l.Dir()); !slices.Equal(got, []string{stateFile}) {
			t.Errorf("sandbox directory holds %q after the failed save", got)
		}
		// Space is back: saving works again.
		if err := l.Save(record{Count: 2}); err != nil {
			t.Fatalf("Save after ENOSPC: %v", err)
		}
	})
	t.Run("create", func(t *testing.T) {
		testutil.CheckLeaks(t)
		s, err := Open(filepath.Join(mountTmpfs(t, "64k"), "root"))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Create(context.Background(), "a", huge)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Create = %v, want ENOSPC", err)
		}
		if got := names(t, s.Root()); !slices.Equal(got, []string{locksDir}) {
			t.Errorf("root holds %q after the failed create, want only %s", got, locksDir)
		}
		if got := names(t, filepath.Join(s.Root(), locksDir)); len(got) != 0 {
			t.Errorf("lock files left after the failed create: %q", got)
		}
		mustCreate(t, s, "a", record{})
	})
}

func FuzzLoadState(f *testing.F) {
	for _, seed := range []string{
		"", "{}", "null", `{"version": 1, "data": {"name": "a", "count": 1}}`,
		`{"version": 1, "data": null}`, `{"version": 2, "data": {}}`, `{"version": -1, "data": 1}`,
		`{"version": 1e400, "data": {}}`, `{"version": 1, "data": {"count": 1.5}}`,
		`{"version": 1, "data": {"na`, "\xff\xfe", `{"version": 1, "data": []}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const path = "/root/a/state.json"
		for _, v := range []any{new(record), new(map[string]any), new(any)} {
			err := decodeState(path, b, v)
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooNew) {
				t.Fatalf("decode %q = %v, want nil, ErrCorrupt or ErrTooNew", b, err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
		}
		// Whatever decodes as a record survives a save and a load unchanged.
		var r record
		if decodeState(path, b, &r) != nil {
			return
		}
		enc, err := encodeState(r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 record
		if err := decodeState(path, enc, &r2); err != nil || r2 != r {
			t.Fatalf("round trip of %+v = %+v, %v", r, r2, err)
		}
	})
}

func TestLoadStateFromDisk(t *testing.T) {
	// FuzzLoadState's seeds through the real Load, file and all.
	for _, b := range [][]byte{nil, []byte("{"), bytes.Repeat([]byte("["), 10000), []byte(`{"version":1,"data":{}}`)} {
		s := newStore(t)
		if err := os.Mkdir(s.dir("a"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.dir("a"), stateFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		var r record
		if err := s.Load("a", &r); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("Load of %.20q = %v", b, err)
		}
	}
}
