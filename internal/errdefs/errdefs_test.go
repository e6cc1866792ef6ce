package errdefs_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Each sentinel is distinct and stays matchable through wrapping.
func TestSentinelsDistinctAndWrappable(t *testing.T) {
	all := []error{errdefs.ErrNotFound, errdefs.ErrExists, errdefs.ErrNotSupported,
		errdefs.ErrInvalid, errdefs.ErrConflict, errdefs.ErrUnavailable, errdefs.ErrCorrupt}
	for i, a := range all {
		wrapped := fmt.Errorf("outer: %w", fmt.Errorf("inner %q: %w", "x", a))
		for j, b := range all {
			if got, want := errors.Is(wrapped, b), i == j; got != want {
				t.Errorf("errors.Is(wrap(%v), %v) = %v, want %v", a, b, got, want)
			}
		}
	}
}
