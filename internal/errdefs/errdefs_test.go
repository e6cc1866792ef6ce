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

// A package sentinel made by New matches itself and its kind, and no other.
func TestNewMatchesItsKind(t *testing.T) {
	locked := errdefs.New(errdefs.ErrConflict, "locked by another command")
	other := errdefs.New(errdefs.ErrConflict, "locked by another command")
	wrapped := fmt.Errorf("lock sandbox %q: %w", "web", locked)
	if !errors.Is(wrapped, locked) || !errors.Is(wrapped, errdefs.ErrConflict) {
		t.Errorf("wrapped %v does not match its sentinel and kind", wrapped)
	}
	if errors.Is(wrapped, other) || errors.Is(wrapped, errdefs.ErrNotFound) {
		t.Errorf("wrapped %v matches a sentinel it is not", wrapped)
	}
	if got, want := wrapped.Error(), `lock sandbox "web": locked by another command`; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}
