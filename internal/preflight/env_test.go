package preflight_test

import (
	"testing"

	"github.com/kindling-vm/kindling/internal/preflight"
	"github.com/kindling-vm/kindling/sandbox"
)

// The lookup follows the runtime's: the same environment variable.
func TestEnvFirecrackerMatchesSandbox(t *testing.T) {
	if preflight.EnvFirecracker != sandbox.EnvFirecracker {
		t.Errorf("preflight.EnvFirecracker = %q, sandbox.EnvFirecracker = %q", preflight.EnvFirecracker, sandbox.EnvFirecracker)
	}
}
