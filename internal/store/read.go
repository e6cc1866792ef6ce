package store

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Limits of the files kindling reads. Everything kindling reads from disk
// goes through ReadFile with one of them, so that no file — a state file, a
// manifest, a config, or /dev/zero given as one — can make it read without
// end.
const (
	// MaxConfigSize bounds a sandbox config file (--config).
	MaxConfigSize = 1 << 20
	// MaxManifestSize bounds a snapshot or template manifest.
	MaxManifestSize = 4 << 20
	// MaxStateSize bounds a sandbox state file.
	MaxStateSize = maxStateSize
)

// ErrTooLarge: a file is larger than kindling reads; see *TooLargeError.
// It matches errdefs.ErrInvalid.
var ErrTooLarge = errdefs.New(errdefs.ErrInvalid, "file too large")

// TooLargeError is returned by ReadFile for a file of more than its limit.
// It matches ErrTooLarge and errdefs.ErrInvalid.
type TooLargeError struct {
	Path  string // the file
	Limit int64  // the most that is read
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: larger than %s, the most kindling reads (is it the right file?)", e.Path, sizeString(e.Limit))
}

// Is reports whether target is ErrTooLarge or errdefs.ErrInvalid.
func (e *TooLargeError) Is(target error) bool {
	return target == ErrTooLarge || target == errdefs.ErrInvalid
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// ReadFile reads the file at path, as os.ReadFile does, but never more than
// limit bytes: a longer file (or an endless one such as /dev/zero) gives a
// *TooLargeError after reading limit+1 bytes. Errors opening the file are
// returned as os.Open's (matching os.ErrNotExist and the like).
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadLimited(f, path, limit)
}

// ReadLimited reads r to its end, but never more than limit bytes: more
// gives a *TooLargeError naming name.
func ReadLimited(r io.Reader, name string, limit int64) ([]byte, error) {
	if limit < 0 {
		return nil, errors.New("read: negative limit")
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, &TooLargeError{Path: name, Limit: limit}
	}
	return b, nil
}
