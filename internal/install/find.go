package install

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Kind is one of the executables of a Firecracker release.
type Kind string

// The executables kindling installs and finds.
const (
	Firecracker Kind = "firecracker"
	Jailer      Kind = "jailer"
)

// Environment variables naming the executables.
const (
	EnvFirecracker = "KINDLING_FIRECRACKER"
	EnvJailer      = "KINDLING_JAILER"
)

// Env returns the environment variable that names k's executable.
func (k Kind) Env() string {
	if k == Jailer {
		return EnvJailer
	}
	return EnvFirecracker
}

// NotFoundError says no executable of a kind was found anywhere Find
// looks, and how to provide one. It matches errdefs.ErrNotFound.
type NotFoundError struct {
	Kind Kind
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no %s executable found: give --%s PATH, set %s, put %s on PATH, or run 'kindling install firecracker'",
		e.Kind, e.Kind, e.Kind.Env(), e.Kind)
}

// Is makes the error match errdefs.ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == errdefs.ErrNotFound }

// Find resolves the executable of kind k: given, when not ""; else the
// path in $KINDLING_FIRECRACKER (or $KINDLING_JAILER); else k's name on
// PATH; else the release installed as "current" (see Install). The path
// returned is absolute; given and the environment's path are returned
// without being checked, so that running them reports what is wrong with
// them. An installed release is returned by its versioned path
// (.../v1.14.2/firecracker), so that what uses it keeps the same release
// when "current" moves. When nothing is found the error is a
// *NotFoundError.
func Find(k Kind, given string) (string, error) {
	if given == "" {
		given = os.Getenv(k.Env())
	}
	if given != "" {
		return filepath.Abs(given)
	}
	if p, err := exec.LookPath(string(k)); err == nil {
		return filepath.Abs(p)
	}
	if p, ok := installed(k); ok {
		return p, nil
	}
	return "", &NotFoundError{Kind: k}
}

// installed returns k's executable in the current release of the first
// install directory that has one.
func installed(k Kind) (string, bool) {
	for _, dir := range searchDirs() {
		p, err := filepath.EvalSymlinks(filepath.Join(dir, currentLink, string(k)))
		if err != nil {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}
