package store

import (
	"errors"
	"fmt"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Sentinel errors, matched with errors.Is. Errors returned by the store wrap
// them with the operation and the sandbox ID. ErrNotFound and ErrExists are
// kindling's own (internal/errdefs), the values package sandbox re-exports;
// the others match one of kindling's kinds as well.
var (
	// ErrInvalidID: the ID does not match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}.
	// It matches errdefs.ErrInvalid.
	ErrInvalidID = errdefs.New(errdefs.ErrInvalid, "must match "+idRule)
	// ErrNotFound: no sandbox has this ID, or its create never finished.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: a sandbox with this ID already exists.
	ErrExists = errdefs.ErrExists
	// ErrLocked: TryLock found the sandbox locked by another command. It
	// matches errdefs.ErrConflict.
	ErrLocked = errdefs.New(errdefs.ErrConflict, "locked by another command")
	// ErrCorrupt: a state file cannot be decoded; see *CorruptError. It
	// matches errdefs.ErrCorrupt.
	ErrCorrupt = errdefs.New(errdefs.ErrCorrupt, "corrupt state file")
	// ErrTooNew: a state file was written by a newer kindling; see
	// *TooNewError. It matches errdefs.ErrNotSupported.
	ErrTooNew = errdefs.New(errdefs.ErrNotSupported, "state file from a newer kindling")
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

// Is reports whether target is ErrCorrupt or errdefs.ErrCorrupt.
func (e *CorruptError) Is(target error) bool {
	return target == ErrCorrupt || target == errdefs.ErrCorrupt
}

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

// Is reports whether target is ErrTooNew or errdefs.ErrNotSupported.
func (e *TooNewError) Is(target error) bool {
	return target == ErrTooNew || target == errdefs.ErrNotSupported
}

// opError wraps err from operation op on sandbox id, naming the ID unless
// err is the ID's own validation error, which names it already.
func opError(op, id string, err error) error {
	if errors.Is(err, ErrInvalidID) {
		return fmt.Errorf("%s sandbox: %w", op, err)
	}
	return fmt.Errorf("%s sandbox %q: %w", op, id, err)
}
