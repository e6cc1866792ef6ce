package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// This file exports the store's write and lock disciplines for the other
// stores kindling keeps beside the sandboxes' (images, templates), so that
// the tree has one atomic write and one cross-process lock.

// WriteFileAtomic replaces dir/name with b: a temporary file in dir is
// written, synced and renamed over name, and dir is synced. After a crash
// the file holds either its old content or b; on error the old file is
// intact and no temporary file is left. A missing dir gives an error
// matching ErrNotFound.
func WriteFileAtomic(dir, name string, b []byte) error {
	return writeFileAtomic(dir, name, b)
}

// SyncDir fsyncs the directory dir, so that entries created, renamed or
// removed in it survive a crash of the host.
func SyncDir(dir string) error { return syncDir(dir) }

// FileLock is an exclusive flock on a lock file, shared across goroutines
// and processes: LockFile waits while another holder has it, and the kernel
// releases it when its holder dies. A FileLock is meant for one goroutine;
// Unlock may be called more than once.
type FileLock struct {
	path string
	f    *os.File  // the open lock file holding the flock
	once sync.Once // guards the release of f
	// drop makes Unlock unlink the lock file. Set and read by the holder.
	drop bool
}

// LockFile waits until it holds the flock on the file at path (created,
// mode 0600, if missing; its directory must exist), or ctx is done. If the
// file is unlinked or replaced by another holder meanwhile, it locks the
// file the path names then, so every holder locks the same file.
func LockFile(ctx context.Context, path string) (*FileLock, error) {
	return lockFile(ctx, path, true)
}

// TryLockFile is LockFile without waiting: a lock held elsewhere gives an
// error matching ErrLocked at once.
func TryLockFile(path string) (*FileLock, error) {
	return lockFile(context.Background(), path, false)
}

func lockFile(ctx context.Context, path string, wait bool) (*FileLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	delay := lockPollMin
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock file: %w", err)
		}
		err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			same, serr := samePath(f, path)
			if serr != nil {
				f.Close()
				return nil, serr
			}
			if same {
				return &FileLock{path: path, f: f}, nil
			}
			f.Close() // locked a file that is gone: lock the new one
			continue
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("flock %q: %w", path, err)
		}
		if !wait {
			return nil, ErrLocked
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("still locked by another command: %w", ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, lockPollMax)
	}
}

// Drop makes Unlock unlink the lock file, for a holder that removed what
// the lock guarded. Waiters then lock a new file (see LockFile).
func (l *FileLock) Drop() { l.drop = true }

// Unlock releases the lock (and unlinks the file after Drop). Calls after
// the first do nothing.
func (l *FileLock) Unlock() {
	l.once.Do(func() {
		if l.drop {
			os.Remove(l.path)
		}
		l.f.Close()
	})
}
