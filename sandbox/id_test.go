package sandbox

import (
	"testing"

	"github.com/kindling-vm/kindling/internal/store"
)

func TestNewID(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if err := store.ValidateID(id); err != nil {
			t.Fatalf("NewID() = %q: %v", id, err)
		}
		if len(id) != 12 {
			t.Fatalf("NewID() = %q, want 12 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}
