package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nobody is the uid and gid of the hostile local user in these tests.
const nobody = 65534

// asRoot skips the test unless it runs as root (it makes files of another
// user, the way a hostile local user would).
func asRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes files owned by another user (uid 65534)")
	}
}

// hostileDir makes a directory owned by nobody, as another user would.
func hostileDir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

func wantNotPrivate(t *testing.T, err error, fix string) {
	t.Helper()
	if !errors.Is(err, ErrNotPrivate) {
		t.Fatalf("error %v, want one matching ErrNotPrivate", err)
	}
	if !strings.Contains(err.Error(), fix) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q: want one line naming the fix %q", err, fix)
	}
}

// D2: a state root another user made is refused, as is one others can
// write; the error says how to fix it.
func TestD2StateRootOfAnotherUserRefused(t *testing.T) {
	t.Run("owned by nobody", func(t *testing.T) {
		asRoot(t)
		root := filepath.Join(t.TempDir(), "root")
		hostileDir(t, root)
		_, err := Open(root)
		wantNotPrivate(t, err, "chown 0 "+root)
	})
	t.Run("world-writable", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "root")
		if err := os.Mkdir(root, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(root, 0o777); err != nil {
			t.Fatal(err)
		}
		_, err := Open(root)
		wantNotPrivate(t, err, "chmod go-w "+root)
	})
	t.Run("lock directory of nobody", func(t *testing.T) {
		asRoot(t)
		root := filepath.Join(t.TempDir(), "root")
		if err := os.Mkdir(root, 0o700); err != nil {
			t.Fatal(err)
		}
		hostileDir(t, filepath.Join(root, locksDir))
		_, err := Open(root)
		wantNotPrivate(t, err, "chown")
	})
}

// D2: a sandbox directory swapped for another user's (whose state file
// says what that user likes) is not used, nor removed.
func TestD2SandboxDirOfAnotherUserRefused(t *testing.T) {
	asRoot(t)
	s := newStore(t)
	mustCreate(t, s, "web", record{Name: "mine"})
	dir, _ := s.Dir("web")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	hostileDir(t, dir)
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(`{"version":2,"data":{"name":"theirs"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var got record
	wantNotPrivate(t, s.Load("web", &got), "chown")
	_, err := s.Lock(context.Background(), "web")
	wantNotPrivate(t, err, "chown")
	wantNotPrivate(t, s.Remove(context.Background(), "web"), "chown")
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err != nil {
		t.Errorf("the refused directory was changed: %v", err)
	}
}

// D3: nothing under the state root is followed through a symlink: not a
// sandbox directory, not a lock file (even a dangling one), not a state
// file.
func TestD3StateRootSymlinksNotFollowed(t *testing.T) {
	ctx := context.Background()
	t.Run("sandbox directory", func(t *testing.T) {
		s := newStore(t)
		elsewhere := t.TempDir()
		if err := os.WriteFile(filepath.Join(elsewhere, stateFile), []byte(`{"version":2,"data":{"name":"theirs"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(elsewhere, filepath.Join(s.Root(), "web")); err != nil {
			t.Fatal(err)
		}
		var got record
		wantNotPrivate(t, s.Load("web", &got), "symbolic link")
		_, err := s.Lock(ctx, "web")
		wantNotPrivate(t, err, "symbolic link")
		wantNotPrivate(t, s.Remove(ctx, "web"), "symbolic link")
		if _, err := os.Stat(filepath.Join(elsewhere, stateFile)); err != nil {
			t.Errorf("the link's target was changed: %v", err)
		}
	})
	t.Run("dangling lock file", func(t *testing.T) {
		s := newStore(t)
		target := filepath.Join(t.TempDir(), "created-by-root")
		if err := os.Symlink(target, filepath.Join(s.Root(), locksDir, "web")); err != nil {
			t.Fatal(err)
		}
		err := s.Create(ctx, "web", record{})
		wantNotPrivate(t, err, "symbolic link")
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the lock's link target was created: %v", err)
		}
	})
	t.Run("state file", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, "web", record{Name: "mine"})
		dir, _ := s.Dir("web")
		other := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(other, []byte(`{"version":2,"data":{"name":"theirs"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(other, filepath.Join(dir, stateFile)); err != nil {
			t.Fatal(err)
		}
		var got record
		wantNotPrivate(t, s.Load("web", &got), "symbolic link")
	})
	t.Run("OpenInDir", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(t.TempDir(), "target")
		if err := os.Symlink(target, filepath.Join(dir, "log")); err != nil {
			t.Fatal(err)
		}
		_, err := OpenInDir("sandbox directory", dir, "log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		wantNotPrivate(t, err, "symbolic link")
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the link's target was created: %v", err)
		}
		if _, err := OpenInDir("sandbox directory", dir, "../x", os.O_RDONLY, 0); err == nil {
			t.Error("OpenInDir took a name with a path in it")
		}
	})
}

// D11: ReadFile stops at its limit, on an endless file too.
func TestD11ReadFileLimit(t *testing.T) {
	_, err := ReadFile("/dev/zero", 1<<10)
	var tl *TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.Limit != 1<<10 {
		t.Fatalf("ReadFile(/dev/zero) = %v, want a *TooLargeError", err)
	}
	if want := "/dev/zero: larger than 1 KiB"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start %q", err, want)
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(p, 5); err != nil || string(b) != "12345" {
		t.Errorf("ReadFile at its limit = %q, %v", b, err)
	}
	if _, err := ReadFile(p, 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile over its limit = %v", err)
	}
}
