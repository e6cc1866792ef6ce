package network

import (
	"fmt"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Sentinel errors, the same values as internal/errdefs's, matched with
// errors.Is.
var (
	// ErrInvalid matches an *InvalidError: a spec, flag value or name that
	// breaks a rule. Nothing was changed.
	ErrInvalid = errdefs.ErrInvalid
	// ErrNotFound: a CNI network, namespace or record target does not exist.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: a slot or namespace of that name already exists.
	ErrExists = errdefs.ErrExists
	// ErrConflict: a host port is in use or published by another sandbox;
	// the pool is empty or closed.
	ErrConflict = errdefs.ErrConflict
	// ErrNotSupported: asked of a kind of network that does not do it
	// (a DNS forwarder for a CNI network).
	ErrNotSupported = errdefs.ErrNotSupported
)

// InvalidError reports a value that breaks a rule, as in
// `egress rule "10.0.0.0/33": not a CIDR or a domain name`. It matches
// ErrInvalid.
type InvalidError struct {
	What  string // what the value is: "egress rule", "port spec", …
	Value string // the offending value as given
	Rule  string // what is wrong with it, and the fix where there is one
}

// Error returns `WHAT "VALUE": RULE`.
func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.What, e.Value, e.Rule)
}

// Is reports whether target is ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(what, value, rule string) error {
	return &InvalidError{What: what, Value: value, Rule: rule}
}
