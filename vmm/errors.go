package vmm

import (
	"fmt"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Sentinel errors of package vmm. Typed errors below match one of them with
// errors.Is, so a caller can branch on the kind of failure without looking at
// the data the typed error carries. ErrNotSupported and ErrNotFound are
// kindling's own (internal/errdefs), the same values fcapi and sandbox use;
// the others are this package's and match one of kindling's kinds as well
// (ErrInvalidConfig an invalid argument, ErrInvalidState a conflict).
var (
	// ErrNotSupported is returned for an operation this driver, or the running
	// Firecracker release, cannot perform. It is fcapi.ErrNotSupported too.
	ErrNotSupported = errdefs.ErrNotSupported
	// ErrInvalidConfig is matched by every *ConfigError (and
	// errdefs.ErrInvalid).
	ErrInvalidConfig = errdefs.New(errdefs.ErrInvalid, "invalid configuration")
	// ErrInvalidState is returned for an operation attempted in a state that
	// does not allow it; matched by every *StateError (and
	// errdefs.ErrConflict).
	ErrInvalidState = errdefs.New(errdefs.ErrConflict, "invalid state")
	// ErrNotRunning is returned when the operation needs a running VMM.
	ErrNotRunning = errdefs.New(errdefs.ErrConflict, "VMM is not running")
	// ErrExited is returned once the Firecracker process has exited.
	ErrExited = errdefs.New(errdefs.ErrConflict, "VMM has exited")
	// ErrNotFound is returned for a device or resource that does not exist.
	ErrNotFound = errdefs.ErrNotFound
)

// ConfigError is one problem found in a Config. Validate joins all of them with
// errors.Join; each matches ErrInvalidConfig.
type ConfigError struct {
	// Field names the setting, as a path: "kernel", "drives[1].path",
	// "jailer.uid".
	Field string
	// Value is the offending value as it is shown in the message: quoted
	// for strings ("\"/x/vmlinux\""), bare for numbers ("40"); empty when the
	// setting was missing.
	Value string
	// Problem says what is wrong: "no such file", "out of range 1–32".
	Problem string
	// Fix, when set, says what to do about it.
	Fix string
}

// Error returns one line: the field, its value when there is one, the problem
// and, in parentheses, the fix.
//
//	kernel "/x/vmlinux": no such file (give the path of an uncompressed kernel image)
func (e *ConfigError) Error() string {
	s := e.Field
	if e.Value != "" {
		s += " " + e.Value
	}
	s += ": " + e.Problem
	if e.Fix != "" {
		s += " (" + e.Fix + ")"
	}
	return s
}

// Is reports whether target is ErrInvalidConfig or errdefs.ErrInvalid.
func (e *ConfigError) Is(target error) bool {
	return target == ErrInvalidConfig || target == errdefs.ErrInvalid
}

// StateError is returned by an operation attempted in a state that forbids it,
// such as pausing an exited VMM. It matches ErrInvalidState and, depending on
// State, ErrNotRunning or ErrExited.
type StateError struct {
	// Op is the operation: "pause", "snapshot", "attach drive".
	Op string
	// State is the state the VMM was in: "exited", "created", "paused".
	State string
	// Want, when set, describes the state the operation needs ("running").
	Want string
}

// Error returns "pause: VM is not running (state: exited)" or, with Want set,
// "resume: VM is not paused (state: running)".
func (e *StateError) Error() string {
	want := e.Want
	if want == "" {
		want = "running"
	}
	return fmt.Sprintf("%s: VM is not %s (state: %s)", e.Op, want, e.State)
}

// Is reports whether target is ErrInvalidState (or errdefs.ErrConflict); ErrNotRunning when the
// operation wanted a running VMM; ErrExited when the VMM has exited.
func (e *StateError) Is(target error) bool {
	switch target {
	case ErrInvalidState, errdefs.ErrConflict:
		return true
	case ErrNotRunning:
		return e.Want == "" || e.Want == "running"
	case ErrExited:
		return e.State == "exited"
	}
	return false
}

// NotSupportedError is returned for an operation the driver does not perform,
// or that the running Firecracker release lacks. It matches ErrNotSupported.
type NotSupportedError struct {
	// Op is the operation: "resize vCPUs".
	Op string
	// Reason, when set, says why: "Firecracker cannot hot-plug vCPUs".
	Reason string
}

// Error returns "resize vCPUs: not supported" or, with a reason,
// "resize vCPUs: not supported: Firecracker cannot hot-plug vCPUs".
func (e *NotSupportedError) Error() string {
	if e.Reason == "" {
		return e.Op + ": not supported"
	}
	return e.Op + ": not supported: " + e.Reason
}

// Is reports whether target is ErrNotSupported.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }
