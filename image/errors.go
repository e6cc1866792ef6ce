package image

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// The sentinels every error of this package wraps, kindling's own
// (internal/errdefs), re-exported so that callers match them with
// errors.Is without importing an internal package.
var (
	ErrNotFound     = errdefs.ErrNotFound
	ErrExists       = errdefs.ErrExists
	ErrInvalid      = errdefs.ErrInvalid
	ErrCorrupt      = errdefs.ErrCorrupt
	ErrNotSupported = errdefs.ErrNotSupported
	ErrConflict     = errdefs.ErrConflict
)

// kindErr is an error that reads as msg and matches kind (one of the
// sentinels) and, through Unwrap, the cause.
type kindErr struct {
	kind  error
	msg   string
	cause error
}

func (e *kindErr) Error() string { return e.msg }

func (e *kindErr) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// errorf makes an error matching kind whose text is the formatted message.
// A %w in format also makes the wrapped error matchable.
func errorf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &kindErr{kind: kind, msg: err.Error(), cause: errors.Unwrap(err)}
}

// diskFull reports whether err says a file system ran out of space or
// inodes.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
