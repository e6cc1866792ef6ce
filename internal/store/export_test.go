package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lock")
	l, err := LockFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLockFile(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLockFile while held = %v, want ErrLocked", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := LockFile(tctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockFile while held = %v, want DeadlineExceeded", err)
	}
	// A waiter gets the lock once it is dropped, on a new file.
	got := make(chan error, 1)
	go func() {
		l2, err := LockFile(ctx, path)
		if err == nil {
			l2.Unlock()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	l.Drop()
	l.Unlock()
	l.Unlock() // twice is fine
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter still waiting after Unlock")
	}
	l3, err := TryLockFile(path)
	if err != nil {
		t.Fatalf("TryLockFile after Unlock: %v", err)
	}
	l3.Drop()
	l3.Unlock()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file after Drop and Unlock: %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(dir, "f.json", []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "f.json")); string(b) != content {
			t.Errorf("file holds %q, want %q", b, content)
		}
	}
	if des, _ := os.ReadDir(dir); len(des) != 1 {
		t.Errorf("directory holds %d entries, want 1 (no temporary file)", len(des))
	}
	if err := WriteFileAtomic(filepath.Join(dir, "nosuch"), "f", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("write into a missing directory = %v, want ErrNotFound", err)
	}
	if err := SyncDir(dir); err != nil {
		t.Error(err)
	}
}
