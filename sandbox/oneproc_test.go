package sandbox

import (
	"slices"
	"testing"

	"github.com/kindling-vm/kindling/internal/monitor"
)

func TestWithOneProc(t *testing.T) {
	got := withOneProc([]string{"PATH=/bin"})
	want := []string{"PATH=/bin", "GOMAXPROCS=1", monitor.EnvOneProc + "=1"}
	if !slices.Equal(got, want) {
		t.Errorf("withOneProc: %q, want %q", got, want)
	}
	// A GOMAXPROCS passed on (KINDLING_PASS_ENV) is the caller's choice.
	passed := []string{"PATH=/bin", "GOMAXPROCS=4"}
	if got := withOneProc(slices.Clone(passed)); !slices.Equal(got, passed) {
		t.Errorf("withOneProc with GOMAXPROCS passed: %q, want %q", got, passed)
	}
}
