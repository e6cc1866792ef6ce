package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Backoff bounds while Lock waits for another holder.
const (
	lockPollMin = time.Millisecond
	lockPollMax = 10 * time.Millisecond
)

// Locked is a held lock on one sandbox. Other commands, in this process or
// another, that lock the same sandbox wait until Unlock. Locks are flocks:
// the kernel releases them when the holder dies. A Locked is meant for one
// goroutine; Unlock may be called more than once.
type Locked struct {
	s  *Store
	id string
	fl *FileLock
	// drop makes Unlock unlink the lock file (the sandbox is gone). Set and
	// read by the goroutine that holds the lock.
	drop bool
}

// Lock waits until it holds the lock on sandbox id, or ctx is done. The
// sandbox must exist (an incomplete one counts); otherwise the error matches
// ErrNotFound.
func (s *Store) Lock(ctx context.Context, id string) (*Locked, error) {
	l, err := s.lockExisting(ctx, id, true)
	if err != nil {
		return nil, opError("lock", id, err)
	}
	return l, nil
}

// TryLock takes the lock on sandbox id if it is free and returns an error
// matching ErrLocked at once if it is not.
func (s *Store) TryLock(id string) (*Locked, error) {
	l, err := s.lockExisting(context.Background(), id, false)
	if err != nil {
		return nil, opError("lock", id, err)
	}
	return l, nil
}

// lockExisting locks id and checks that its directory exists; if it does
// not, it drops the lock file it may have created and returns ErrNotFound.
func (s *Store) lockExisting(ctx context.Context, id string, wait bool) (*Locked, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	l, err := s.lock(ctx, id, wait)
	if err != nil {
		return nil, err
	}
	if err := CheckPrivateDir("sandbox directory", s.dir(id)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = ErrNotFound
			l.drop = true
		}
		l.Unlock()
		return nil, err
	}
	return l, nil
}

// lock takes the flock on id's lock file, waiting unless wait is false
// (then it fails with ErrLocked).
func (s *Store) lock(ctx context.Context, id string, wait bool) (*Locked, error) {
	fl, err := lockFile(ctx, s.lockPath(id), Exclusive, wait)
	if err != nil {
		return nil, err
	}
	return &Locked{s: s, id: id, fl: fl}, nil
}

// LockMode is how a FileLock is held.
type LockMode int

// Lock modes.
const (
	// Exclusive: no other holder, shared or exclusive.
	Exclusive LockMode = iota
	// Shared: other shared holders, no exclusive one.
	Shared
)

// FileLock is a held flock on a lock file: the one cross-process lock of
// kindling (sandboxes, the template store). The kernel releases it when the
// holder dies. A FileLock is meant for one goroutine; Unlock may be called
// more than once.
type FileLock struct {
	path string
	f    *os.File  // the open lock file holding the flock
	once sync.Once // guards the release of f
}

// LockFile waits until it holds a flock in mode on the file at path
// (created, mode 0600, if missing), or ctx is done.
func LockFile(ctx context.Context, path string, mode LockMode) (*FileLock, error) {
	return lockFile(ctx, path, mode, true)
}

// TryLockFile takes a flock in mode on the file at path if it is free,
// and returns an error matching ErrLocked at once if it is not.
func TryLockFile(path string, mode LockMode) (*FileLock, error) {
	return lockFile(context.Background(), path, mode, false)
}

// lockFile takes the flock, creating the file if needed. It retries when
// the file it locked was unlinked or replaced meanwhile (by a holder that
// dropped it), so that every holder locks the file the path names. With
// wait false it fails with ErrLocked instead of waiting.
func lockFile(ctx context.Context, path string, mode LockMode, wait bool) (*FileLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if mode == Shared {
		how = syscall.LOCK_SH
	}
	delay := lockPollMin
	for {
		// Never through a symlink: a planted link would have the lock's
		// creation make (as root) whatever file it names.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, syscall.ELOOP) {
			return nil, &NotPrivateError{What: "lock file", Path: path, Problem: "is a symbolic link",
				Fix: "kindling does not follow links in its state: remove the link"}
		}
		if err != nil {
			return nil, fmt.Errorf("open lock file: %w", err)
		}
		if testHookLockOpened != nil {
			testHookLockOpened()
		}
		err = flock(f, how|syscall.LOCK_NB)
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

// Unlock releases the lock. Calls after the first do nothing.
func (l *FileLock) Unlock() { l.release(false) }

// Drop unlinks the lock file while still holding it, then releases it: a
// command that opened the file meanwhile finds, once it has the flock,
// that the path no longer names it, and retries. A failure to unlink
// leaves a stale lock file.
func (l *FileLock) Drop() { l.release(true) }

func (l *FileLock) release(unlink bool) {
	l.once.Do(func() {
		if unlink {
			os.Remove(l.path)
		}
		// Closing the only descriptor of the open file releases the flock.
		l.f.Close()
	})
}

// testHookLockOpened, when set by a test, runs between opening a lock file
// and flocking it.
var testHookLockOpened func()

// samePath reports whether the open file f is still the file at path.
func samePath(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat lock file: %w", err)
	}
	pi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat lock file: %w", err)
	}
	return os.SameFile(fi, pi), nil
}

// flock applies how to f, retrying on EINTR.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// ID returns the locked sandbox's ID.
func (l *Locked) ID() string { return l.id }

// Dir returns the locked sandbox's directory.
func (l *Locked) Dir() string { return l.s.dir(l.id) }

// Load decodes the sandbox's state into v, which must be a non-nil pointer.
func (l *Locked) Load(v any) error {
	if err := readState(l.Dir(), v); err != nil {
		return fmt.Errorf("load sandbox %q: %w", l.id, err)
	}
	return nil
}

// Save replaces the sandbox's state with v, atomically: after a crash the
// state file holds either the old state or v. On error the old state is
// intact and no temporary file is left.
func (l *Locked) Save(v any) error {
	if err := writeState(l.Dir(), v); err != nil {
		return fmt.Errorf("save sandbox %q: %w", l.id, err)
	}
	return nil
}

// OpenFile opens the file name in the sandbox's directory without
// following a symlink (see OpenInDir).
func (l *Locked) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return OpenInDir("sandbox directory", l.Dir(), name, flag, perm)
}

// Remove deletes the sandbox's directory with everything in it. The lock
// stays held until Unlock, which also deletes the lock file, so the caller
// can finish tearing the sandbox down before another command can re-create
// it; commands waiting for the lock then find it gone (ErrNotFound).
func (l *Locked) Remove() error {
	if err := l.s.removeLocked(l); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", l.id, err)
	}
	return nil
}

// Unlock releases the lock. Calls after the first do nothing.
func (l *Locked) Unlock() {
	if l.drop {
		// The sandbox is gone: its lock file goes too (a failure leaves a
		// stale lock file for Clean).
		l.fl.Drop()
		return
	}
	l.fl.Unlock()
}

func (s *Store) lockPath(id string) string { return filepath.Join(s.root, locksDir, id) }
