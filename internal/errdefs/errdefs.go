// Package errdefs holds the one set of sentinel errors every kindling
// package wraps: a caller matches a failure's kind with errors.Is against
// these values (or the same values re-exported by a public package, such as
// sandbox.ErrNotFound), whichever layer produced it.
//
// The messages state facts ("not found"); the hint a person needs ("see
// 'kindling ps'") is added by the CLI, never by a library. Public packages
// re-export the sentinels they return as the same values, the way
// cilium/ebpf re-exports ErrNotSupported from its internal package, so
// errors.Is works across package boundaries.
//
// A package's own sentinel that is more specific than a kind (a locked
// sandbox, a state file from a newer release) is made with New and matches
// its kind as well as itself.
//
// It is imported by every layer (fcapi, vmm, sandbox, template, image,
// agent, network, the CLI and the server) and imports nothing of kindling.
package errdefs

import (
	"errors"
	"io/fs"
)

// The kinds of failure. Each is wrapped with %w by the code that detects it,
// so its text follows what was being done: `sandbox "web": already exists`.
var (
	// ErrNotFound: the named thing (sandbox, template, image, file,
	// process) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: something with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrNotSupported: the running release, platform or configuration
	// cannot do this; typed errors carrying the reason match it.
	ErrNotSupported = errors.New("not supported")
	// ErrInvalid: the caller's input is wrong (a spec, a flag value, a
	// request body); nothing was changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrConflict: the thing is busy or in a state that does not allow the
	// operation (locked by another command, paused, running, in use).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: a process or service that must answer does not (a
	// VMM's API, the guest agent, a server).
	ErrUnavailable = errors.New("unavailable")
	// ErrCorrupt: stored data cannot be read back (a state file, a
	// manifest, a checksum that does not match).
	ErrCorrupt = errors.New("corrupt")
)

// New returns a package's own sentinel: its text is msg, and it matches
// kind (one of the sentinels above) with errors.Is as well as itself. Use it
// for a failure more specific than its kind that callers may want to tell
// apart, such as a locked sandbox (a conflict) or a state file from a newer
// release (not supported).
func New(kind error, msg string) error { return &kindError{msg: msg, kind: kind} }

// kindError is a sentinel made by New.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }

// Is reports whether target is the kind e belongs to.
func (e *kindError) Is(target error) bool { return target == e.kind }

// PathProblem turns an error from the file system into the short text a
// person reads after a path: "no such file", "permission denied", else the
// system's own words without the operation and path (which the message
// around it names already).
func PathProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
