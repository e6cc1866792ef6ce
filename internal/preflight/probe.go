package preflight

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/install"
)

// Environment variables naming executables; EnvFirecracker is the same as
// sandbox.EnvFirecracker.
const (
	EnvFirecracker = "KINDLING_FIRECRACKER"
	EnvJailer      = "KINDLING_JAILER"
)

// FirecrackerHint is the fix for a missing firecracker executable: the ways
// LookupFirecracker finds one.
const FirecrackerHint = "pass --firecracker, set " + EnvFirecracker + ", put it on PATH, or run 'kindling install firecracker'"

// probeTimeout bounds one run of an executable asked for its release.
const probeTimeout = 3 * time.Second

// LookupFirecracker finds the firecracker executable as the runtime does:
// the path given, else $KINDLING_FIRECRACKER, else "firecracker" on PATH,
// else the release 'kindling install firecracker' installed.
// It returns an error matching errdefs.ErrNotFound when there is none.
func LookupFirecracker(given string) (string, error) {
	return lookup(given, install.Firecracker)
}

// LookupJailer finds the jailer executable: the path given, else
// $KINDLING_JAILER, else "jailer" on PATH. It returns an error matching
// errdefs.ErrNotFound when there is none.
func LookupJailer(given string) (string, error) {
	return lookup(given, install.Jailer)
}

// lookup finds the executable of kind k the one way kindling does
// (internal/install.Find), for the error type of this package.
func lookup(given string, k install.Kind) (string, error) {
	p, err := install.Find(k, given)
	if err != nil {
		return "", &notFoundError{name: string(k)}
	}
	return p, nil
}

// notFoundError is a lookup that found no executable; it matches
// errdefs.ErrNotFound.
type notFoundError struct{ name string }

func (e *notFoundError) Error() string { return "no " + e.name + " executable found" }

// Is reports whether target is errdefs.ErrNotFound.
func (e *notFoundError) Is(target error) bool { return target == errdefs.ErrNotFound }

// release is what an executable says of itself.
type release struct {
	name    string // "Firecracker", "Jailer"
	version string // "v1.14.2"
	major   int
}

// askRelease runs path --version and reads its first line, "Firecracker
// v1.14.2" or "Jailer v1.7.0".
func askRelease(ctx context.Context, path string) (release, error) {
	out, err := runOutput(ctx, path, "--version")
	if err != nil {
		return release{}, err
	}
	r, ok := parseRelease(out)
	if !ok {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return release{}, fmt.Errorf("unexpected --version output %q", first)
	}
	return r, nil
}

// parseRelease reads "NAME vMAJOR.MINOR.PATCH" from the first line of out.
func parseRelease(out string) (release, bool) {
	first, _, _ := strings.Cut(out, "\n")
	f := strings.Fields(first)
	if len(f) < 2 || len(f[1]) < 2 || f[1][0] != 'v' {
		return release{}, false
	}
	parts := strings.Split(f[1][1:], ".")
	if len(parts) != 3 {
		return release{}, false
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return release{}, false
		}
		nums[i] = n
	}
	return release{name: f[0], version: f[1], major: nums[0]}, true
}

// isFake reports whether path is kindling's fake Firecracker: its --help
// starts "Firecracker vX.Y.Z (fake)". A real Firecracker, or anything that
// fails to answer, is not.
func isFake(ctx context.Context, path string) bool {
	out, err := runOutput(ctx, path, "--help")
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(out, "\n")
	return strings.HasPrefix(first, "Firecracker v") && strings.HasSuffix(strings.TrimSpace(first), "(fake)")
}

// runOutput runs path with args, bounded by probeTimeout, and returns its
// stdout. A failure's error holds the first line of its stderr.
func runOutput(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	c := exec.CommandContext(ctx, path, args...)
	c.Stdout, c.Stderr = &out, &errOut
	c.WaitDelay = time.Second
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("no answer to %s within %v", strings.Join(args, " "), probeTimeout)
		}
		if first, _, _ := strings.Cut(strings.TrimSpace(errOut.String()), "\n"); first != "" {
			return "", fmt.Errorf("%w: %s", err, first)
		}
		return "", err
	}
	return out.String(), nil
}
