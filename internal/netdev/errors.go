package netdev

import (
	"errors"
	"fmt"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrInvalid matches an *InvalidError: a name, MAC or setting that
	// breaks a rule.
	ErrInvalid = errors.New("invalid")
	// ErrExists: a device with the requested name already exists.
	ErrExists = errors.New("already exists")
	// ErrNotFound: the device or network namespace does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotTap: the named device exists but Firecracker cannot attach to
	// it (not a tun/tap device, a layer-3 tun, or a multi-queue tap).
	ErrNotTap = errors.New("not a usable tap device")
	// ErrNotNetNS: the path exists but is not a network namespace.
	ErrNotNetNS = errors.New("not a network namespace")
	// ErrBusy: the tap is already attached to a process (a tap without
	// multi-queue takes one attacher at a time).
	ErrBusy = errors.New("in use")
)

// InvalidError reports a value that breaks a rule, as in
// `tap name "averyveryverylongname": longer than 15 bytes`. It matches
// ErrInvalid.
type InvalidError struct {
	What  string // what the value is: "tap name", "MAC", "netns name", …
	Value string // the offending value as given
	Rule  string // the rule it breaks, phrased as what is wrong
}

// Error returns "WHAT "VALUE": RULE".
func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.What, e.Value, e.Rule)
}

// Is reports whether target is ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(what, value, rule string) error {
	return &InvalidError{What: what, Value: value, Rule: rule}
}
