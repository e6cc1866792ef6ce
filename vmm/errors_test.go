package vmm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
)

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"config with fix", &ConfigError{Field: "kernel", Value: `"/x/vmlinux"`, Problem: "no such file", Fix: "give the path of an uncompressed kernel image"},
			`kernel "/x/vmlinux": no such file (give the path of an uncompressed kernel image)`},
		{"config number", &ConfigError{Field: "vcpus", Value: "40", Problem: "out of range 1–32"}, "vcpus 40: out of range 1–32"},
		{"config missing", &ConfigError{Field: "run_dir", Problem: "required"}, "run_dir: required"},
		{"state", &StateError{Op: "pause", State: "exited"}, "pause: VM is not running (state: exited)"},
		{"state want", &StateError{Op: "resume", State: "running", Want: "paused"}, "resume: VM is not paused (state: running)"},
		{"not supported", &NotSupportedError{Op: "resize vCPUs"}, "resize vCPUs: not supported"},
		{"not supported reason", &NotSupportedError{Op: "resize vCPUs", Reason: "Firecracker cannot hot-plug vCPUs"},
			"resize vCPUs: not supported: Firecracker cannot hot-plug vCPUs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorsIs(t *testing.T) {
	sentinels := []error{ErrNotSupported, ErrInvalidConfig, ErrInvalidState, ErrNotRunning, ErrExited, ErrNotFound}
	tests := []struct {
		name string
		err  error
		is   []error // the sentinels it must match; it must match no other
	}{
		{"config", &ConfigError{Field: "vcpus"}, []error{ErrInvalidConfig}},
		{"state exited", &StateError{Op: "pause", State: "exited"}, []error{ErrInvalidState, ErrNotRunning, ErrExited}},
		{"state paused wants running", &StateError{Op: "snapshot", State: "paused", Want: "running"}, []error{ErrInvalidState, ErrNotRunning}},
		{"state running wants paused", &StateError{Op: "resume", State: "running", Want: "paused"}, []error{ErrInvalidState}},
		{"not supported", &NotSupportedError{Op: "resize vCPUs"}, []error{ErrNotSupported}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrapped := fmt.Errorf("machine %q: %w", "vm1", tt.err)
			for _, s := range sentinels {
				want := false
				for _, w := range tt.is {
					want = want || w == s
				}
				if got := errors.Is(wrapped, s); got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", wrapped, s, got, want)
				}
			}
		})
	}
}

func TestConfigErrorAs(t *testing.T) {
	err := errors.Join(&ConfigError{Field: "kernel", Problem: "required"}, &ConfigError{Field: "vcpus", Value: "40", Problem: "out of range"})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "kernel" {
		t.Fatalf("errors.As found %v, want the kernel error", ce)
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatal("joined config errors do not match ErrInvalidConfig")
	}
}

// Every typed error and package sentinel also matches its kind among
// kindling's sentinels (internal/errdefs), and ErrNotSupported and
// ErrNotFound are those sentinels.
func TestErrorKinds(t *testing.T) {
	if ErrNotSupported != errdefs.ErrNotSupported || ErrNotFound != errdefs.ErrNotFound || fcapi.ErrNotSupported != ErrNotSupported {
		t.Error("ErrNotSupported / ErrNotFound are not kindling's sentinels")
	}
	tests := []struct {
		name string
		err  error
		kind error
	}{
		{"config", &ConfigError{Field: "vcpus"}, errdefs.ErrInvalid},
		{"invalid config", ErrInvalidConfig, errdefs.ErrInvalid},
		{"state", &StateError{Op: "pause", State: "exited"}, errdefs.ErrConflict},
		{"invalid state", ErrInvalidState, errdefs.ErrConflict},
		{"not running", ErrNotRunning, errdefs.ErrConflict},
		{"exited", &exitError{msg: "firecracker exited"}, errdefs.ErrConflict},
		{"pool exhausted", ErrPoolExhausted, errdefs.ErrConflict},
		{"not supported", &NotSupportedError{Op: "resize vCPUs"}, errdefs.ErrNotSupported},
		{"fcapi not supported", &fcapi.NotSupportedError{Feature: "memory hotplug"}, ErrNotSupported},
		{"step", &StepError{Step: "drives", Err: &fcapi.NotSupportedError{Feature: "x"}}, ErrNotSupported},
	}
	for _, tt := range tests {
		if err := fmt.Errorf("op: %w", tt.err); !errors.Is(err, tt.kind) {
			t.Errorf("%s: %v does not match %v", tt.name, err, tt.kind)
		}
	}
}
