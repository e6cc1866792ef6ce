package store

import (
	"errors"
	"fmt"
)

// Sentinel errors, matched with errors.Is. Errors returned by the store wrap
// them with the operation and the sandbox ID.
var (
	// ErrInvalidID: the ID does not match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}.
	ErrInvalidID = errors.New("must match " + idRule)
	// ErrNotFound: no sandbox has this ID, or its create never finished.
	ErrNotFound = errors.New("not found")
	// ErrExists: a sandbox with this ID already exists.
	ErrExists = errors.New("already exists")
	// ErrLocked: TryLock found the sandbox locked by another command.
	ErrLocked = errors.New("locked by another command")
	// ErrCorrupt: a state file cannot be decoded; see *CorruptError.
	ErrCorrupt = errors.New("corrupt state file")
	// ErrTooNew: a state file was written by a newer kindling; see
	// *TooNewError.
	ErrTooNew = errors.New("state file from a newer kindling")
)

// CorruptError is returned when a state file is truncated, is not JSON, or
// does not hold a valid envelope or record. It matches ErrCorrupt.
type CorruptError struct {
	Path string // the state file
	Err  error  // what the decoder said
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %q is corrupt: %v", e.Path, e.Err)
}

// Unwrap returns the decoder's error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// TooNewError is returned when a state file carries a version above the one
// this kindling writes. It matches ErrTooNew.
type TooNewError struct {
	Path    string // the state file
	Version int    // the version found in it
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("state file %q has version %d, this kindling understands up to %d: upgrade kindling",
		e.Path, e.Version, Version)
}

// Is reports whether target is ErrTooNew.
func (e *TooNewError) Is(target error) bool { return target == ErrTooNew }

// opError wraps err from operation op on sandbox id, naming the ID unless
// err is the ID's own validation error, which names it already.
func opError(op, id string, err error) error {
	if errors.Is(err, ErrInvalidID) {
		return fmt.Errorf("%s sandbox: %w", op, err)
	}
	return fmt.Errorf("%s sandbox %q: %w", op, id, err)
}
