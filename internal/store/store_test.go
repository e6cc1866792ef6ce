package store

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// record stands for the runtime's sandbox record.
type record struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustCreate(t *testing.T, s *Store, id string, v any) {
	t.Helper()
	if err := s.Create(context.Background(), id, v); err != nil {
		t.Fatalf("Create(%q): %v", id, err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o, want %#o", path, got, want)
	}
}

func TestOpen(t *testing.T) {
	t.Run("creates root", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "a", "b")
		s, err := Open(root)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if s.Root() != root {
			t.Errorf("Root() = %q, want %q", s.Root(), root)
		}
		checkMode(t, root, 0o700)
		checkMode(t, filepath.Join(root, locksDir), 0o700)
		if _, err := Open(root); err != nil {
			t.Errorf("second Open: %v", err)
		}
	})
	t.Run("relative root made absolute", func(t *testing.T) {
		t.Chdir(t.TempDir())
		s, err := Open("rel")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !filepath.IsAbs(s.Root()) {
			t.Errorf("Root() = %q, want absolute", s.Root())
		}
	})
	t.Run("root is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(f); err == nil {
			t.Fatal("Open on a regular file succeeded")
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := Open(""); err == nil {
			t.Fatal("Open(\"\") succeeded")
		}
	})
}

func TestDefaultRoot(t *testing.T) {
	tests := []struct{ env, want string }{
		{"", DefaultRootDir},
		{"/tmp/kr", "/tmp/kr"},
	}
	for _, tt := range tests {
		t.Run("env="+tt.env, func(t *testing.T) {
			t.Setenv(EnvRoot, tt.env)
			if got := DefaultRoot(); got != tt.want {
				t.Errorf("DefaultRoot() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCreateLoad(t *testing.T) {
	s := newStore(t)
	in := record{Name: "web", Count: 3}
	mustCreate(t, s, "web1", in)

	var out record
	if err := s.Load("web1", &out); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if out != in {
		t.Errorf("Load = %+v, want %+v", out, in)
	}
	dir, err := s.Dir("web1")
	if err != nil || dir != filepath.Join(s.Root(), "web1") {
		t.Fatalf("Dir = %q, %v", dir, err)
	}
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, stateFile), 0o600)
	checkMode(t, s.lockPath("web1"), 0o600)

	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Version int    `json:"version"`
		Data    record `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.Version != Version || env.Data != in {
		t.Errorf("state file = %s (%v), want version %d and %+v", b, err, Version, in)
	}
}

func TestCreateErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, s *Store)
		id      string
		v       any
		want    error
		keepDir bool // the directory must exist afterwards (someone else's)
	}{
		{name: "invalid ID", id: "../x", v: record{}, want: ErrInvalidID},
		{name: "exists", id: "a", v: record{}, want: ErrExists, keepDir: true,
			setup: func(t *testing.T, s *Store) { mustCreate(t, s, "a", record{Name: "first"}) }},
		{name: "incomplete exists", id: "a", v: record{}, want: ErrExists, keepDir: true,
			setup: func(t *testing.T, s *Store) {
				if err := os.Mkdir(s.dir("a"), 0o700); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "unencodable", id: "a", v: make(chan int)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if tt.setup != nil {
				tt.setup(t, s)
			}
			err := s.Create(context.Background(), tt.id, tt.v)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Create = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), "create sandbox") {
				t.Errorf("error %q does not say what failed", err)
			}
			if validID(tt.id) {
				_, serr := os.Stat(s.dir(tt.id))
				if exists := serr == nil; exists != tt.keepDir {
					t.Errorf("directory exists = %v, want %v", exists, tt.keepDir)
				}
			}
		})
	}
}

func TestCreateKeepsFirstState(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "a", record{Name: "first"})
	if err := s.Create(context.Background(), "a", record{Name: "second"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	var r record
	if err := s.Load("a", &r); err != nil || r.Name != "first" {
		t.Fatalf("Load = %+v, %v, want first", r, err)
	}
}

func TestCreateRace(t *testing.T) {
	s := newStore(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Create(context.Background(), "race", record{Count: i})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("creates %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, ErrExists):
			t.Errorf("create %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no create won")
	}
	var r record
	if err := s.Load("race", &r); err != nil || r.Count != winner {
		t.Fatalf("Load = %+v, %v, want the winner's count %d", r, err, winner)
	}
}

func TestCreateLocked(t *testing.T) {
	s := newStore(t)
	l, err := s.CreateLocked(context.Background(), "a", record{Name: "x"})
	if err != nil {
		t.Fatalf("CreateLocked: %v", err)
	}
	defer l.Unlock()
	if _, err := s.TryLock("a"); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock while create holds it = %v, want ErrLocked", err)
	}
	if err := l.Save(record{Name: "y"}); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	var r record
	if err := s.Load("a", &r); err != nil || r.Name != "y" {
		t.Fatalf("Load = %+v, %v", r, err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		id    string
		state string // written as the state file of sandbox "a" unless "-"
		want  error
	}{
		{"invalid ID", "../a", "-", ErrInvalidID},
		{"missing", "b", "-", ErrNotFound},
		{"incomplete", "a", "-", ErrNotFound},
		{"empty file", "a", "", ErrCorrupt},
		{"truncated", "a", `{"version": 1, "data": {"na`, ErrCorrupt},
		{"not JSON", "a", "\x00\x01garbage", ErrCorrupt},
		{"array", "a", `[1]`, ErrCorrupt},
		{"no version", "a", `{"data": {}}`, ErrCorrupt},
		{"version zero", "a", `{"version": 0, "data": {}}`, ErrCorrupt},
		{"version string", "a", `{"version": "1", "data": {}}`, ErrCorrupt},
		{"no data", "a", `{"version": 1}`, ErrCorrupt},
		{"data of wrong type", "a", `{"version": 1, "data": {"count": "x"}}`, ErrCorrupt},
		{"trailing garbage", "a", `{"version": 1, "data": {}} {}`, ErrCorrupt},
		{"newer version", "a", `{"version": 99, "data": {"future": true}}`, ErrTooNew},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			path := filepath.Join(s.dir("a"), stateFile)
			if err := os.Mkdir(s.dir("a"), 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.state != "-" {
				if err := os.WriteFile(path, []byte(tt.state), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var r record
			err := s.Load(tt.id, &r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Load = %v, want %v", err, tt.want)
			}
			if tt.want == ErrCorrupt || tt.want == ErrTooNew {
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
			}
			if tt.want == ErrTooNew {
				var tn *TooNewError
				if !errors.As(err, &tn) || tn.Version != 99 {
					t.Errorf("error %v is not a *TooNewError with version 99", err)
				}
			}
		})
	}
}

func TestLoadNilPointer(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "a", record{})
	err := s.Load("a", nil)
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load(nil) = %v, want a caller error, not ErrCorrupt", err)
	}
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	t.Run("saves", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, "a", record{Count: 1})
		var r record
		if err := s.Update(ctx, "a", &r, func() error { r.Count++; return nil }); err != nil {
			t.Fatalf("Update: %v", err)
		}
		var got record
		if err := s.Load("a", &got); err != nil || got.Count != 2 {
			t.Fatalf("Load = %+v, %v, want count 2", got, err)
		}
	})
	t.Run("fn error keeps state", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, "a", record{Count: 1})
		boom := errors.New("boom")
		var r record
		err := s.Update(ctx, "a", &r, func() error { r.Count = 99; return boom })
		if err != boom {
			t.Fatalf("Update = %v, want fn's error as is", err)
		}
		var got record
		if err := s.Load("a", &got); err != nil || got.Count != 1 {
			t.Fatalf("Load = %+v, %v, want count 1", got, err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		s := newStore(t)
		var r record
		err := s.Update(ctx, "nope", &r, func() error { t.Error("fn called"); return nil })
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update = %v, want ErrNotFound", err)
		}
	})
	t.Run("serialises goroutines", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, "a", record{})
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				for range 10 {
					var r record
					if err := s.Update(ctx, "a", &r, func() error { r.Count++; return nil }); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		var got record
		if err := s.Load("a", &got); err != nil || got.Count != 200 {
			t.Fatalf("Load = %+v, %v, want count 200", got, err)
		}
	})
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	mustCreate(t, s, "a", record{})
	dir := s.dir("a")
	if err := os.WriteFile(filepath.Join(dir, "console.log"), []byte("hi"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "a"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, p := range []string{dir, s.lockPath("a")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Remove (%v)", p, err)
		}
	}
	if err := s.Remove(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, "../a"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Remove(../a) = %v, want ErrInvalidID", err)
	}
	// The ID is free again.
	mustCreate(t, s, "a", record{Name: "again"})
}

func TestRemoveWakesWaiter(t *testing.T) {
	testutil.CheckLeaks(t)
	ctx := context.Background()
	s := newStore(t)
	mustCreate(t, s, "a", record{})
	l, err := s.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		l2, err := s.Lock(ctx, "a")
		if err == nil {
			l2.Unlock()
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the waiter open the lock file
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(record{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Save after Remove = %v, want ErrNotFound", err)
	}
	l.Unlock()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("waiting Lock = %v, want ErrNotFound", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting Lock did not return")
	}
	if _, err := os.Lstat(s.lockPath("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file left behind (%v)", err)
	}
}

func TestList(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "b", record{})
	mustCreate(t, s, "a", record{})
	if err := os.Mkdir(s.dir("c"), 0o700); err != nil { // a crashed create
		t.Fatal(err)
	}
	for _, junk := range []string{"bad name", "-x"} { // not sandboxes
		if err := os.Mkdir(filepath.Join(s.Root(), junk), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Root(), "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := []Entry{
		{ID: "a", Dir: s.dir("a")},
		{ID: "b", Dir: s.dir("b")},
		{ID: "c", Dir: s.dir("c"), Incomplete: true},
	}
	if len(got) != len(want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
	for i := range want {
		if g := got[i]; g.ID != want[i].ID || g.Dir != want[i].Dir || g.Incomplete != want[i].Incomplete || g.Stamp.IsZero() != g.Incomplete {
			t.Errorf("List[%d] = %+v, want %+v (with a stamp when complete)", i, got[i], want[i])
		}
	}
}

// A stamp tells versions of a state file apart: a save changes it, and a
// file saved just now has none yet.
func TestStamp(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Create(ctx, "a", record{Name: "one"}); err != nil {
		t.Fatal(err)
	}
	var v record
	st, err := s.LoadStamped("a", &v)
	if err != nil || v.Name != "one" {
		t.Fatalf("LoadStamped: %+v, %v", v, err)
	}
	if !st.IsZero() {
		t.Fatalf("a file saved just now has a stamp: %+v", st)
	}
	time.Sleep(stampSettle + 20*time.Millisecond)
	if st, err = s.LoadStamped("a", &v); err != nil || st.IsZero() {
		t.Fatalf("a settled file: stamp %+v, %v", st, err)
	}
	now, err := s.Stamp("a")
	if err != nil || now != st {
		t.Fatalf("Stamp = %+v, %v; LoadStamped gave %+v", now, err, st)
	}
	ents, err := s.List()
	if err != nil || len(ents) != 1 || ents[0].Stamp != st {
		t.Fatalf("List = %+v, %v; want the stamp %+v", ents, err, st)
	}
	// The same content saved again is another version.
	if err := s.Update(ctx, "a", &v, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if now, err := s.Stamp("a"); err != nil || now == st {
		t.Fatalf("after a save: Stamp = %+v, %v, the same as before", now, err)
	}
	if _, err := s.Stamp("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stamp of a missing sandbox: %v", err)
	}
	if _, err := s.Stamp("../x"); err == nil {
		t.Fatal("Stamp of a bad ID: no error")
	}
}

func TestInvalidIDEverywhere(t *testing.T) {
	const bad = "../x"
	ctx := context.Background()
	s := newStore(t)
	var r record
	tests := []struct {
		name string
		call func() error
	}{
		{"Dir", func() error { _, err := s.Dir(bad); return err }},
		{"Create", func() error { return s.Create(ctx, bad, r) }},
		{"CreateLocked", func() error { _, err := s.CreateLocked(ctx, bad, r); return err }},
		{"Load", func() error { return s.Load(bad, &r) }},
		{"Update", func() error { return s.Update(ctx, bad, &r, func() error { return nil }) }},
		{"Remove", func() error { return s.Remove(ctx, bad) }},
		{"Lock", func() error { _, err := s.Lock(ctx, bad); return err }},
		{"TryLock", func() error { _, err := s.TryLock(bad); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("%s(%q) = %v, want ErrInvalidID", tt.name, bad, err)
			}
			if n := strings.Count(err.Error(), `"../x"`); n != 1 {
				t.Errorf("error %q names the ID %d times, want once", err, n)
			}
		})
	}
	if got := names(t, filepath.Dir(s.Root())); !slices.Equal(got, []string{"root"}) {
		t.Errorf("something was made outside the root: %q", got)
	}
}

// A root holds sandboxes while it has a visible directory; a server's
// socket or lock file and hidden directories do not count.
func TestHoldsSandboxes(t *testing.T) {
	root := t.TempDir()
	if HoldsSandboxes(root) {
		t.Fatal("an empty root holds sandboxes")
	}
	for _, f := range []string{"kindlingd.sock", "kindlingd.lock"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, ".templates"), 0o700); err != nil {
		t.Fatal(err)
	}
	if HoldsSandboxes(root) {
		t.Error("files and a hidden directory count as sandboxes")
	}
	if err := os.Mkdir(filepath.Join(root, "sb"), 0o700); err != nil {
		t.Fatal(err)
	}
	if !HoldsSandboxes(root) {
		t.Error("a sandbox directory does not count")
	}
	if !HoldsSandboxes(filepath.Join(root, "missing")) {
		t.Error("a root that cannot be read counts as empty")
	}
}
