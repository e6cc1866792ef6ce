package store

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// The store's errors match kindling's kinds; ErrNotFound and ErrExists
// are those sentinels.
func TestErrorKinds(t *testing.T) {
	if ErrNotFound != errdefs.ErrNotFound || ErrExists != errdefs.ErrExists {
		t.Error("ErrNotFound / ErrExists are not kindling's sentinels")
	}
	tests := []struct {
		name string
		err  error
		kind error
	}{
		{"invalid id", ErrInvalidID, errdefs.ErrInvalid},
		{"locked", ErrLocked, errdefs.ErrConflict},
		{"corrupt", ErrCorrupt, errdefs.ErrCorrupt},
		{"corrupt file", &CorruptError{Path: "/s", Err: errors.New("bad")}, errdefs.ErrCorrupt},
		{"corrupt file (own)", &CorruptError{Path: "/s", Err: errors.New("bad")}, ErrCorrupt},
		{"too new", &TooNewError{Path: "/s", Version: 9}, errdefs.ErrNotSupported},
		{"too new (own)", &TooNewError{Path: "/s", Version: 9}, ErrTooNew},
	}
	for _, tt := range tests {
		if err := opError("load", "a", fmt.Errorf("x: %w", tt.err)); !errors.Is(err, tt.kind) {
			t.Errorf("%s: %v does not match %v", tt.name, err, tt.kind)
		}
	}
}
