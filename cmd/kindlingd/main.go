// Command kindlingd is kindling's sandbox server: it keeps the runtime of
// one state root loaded and serves it over kindling's native API (Connect
// RPC, api/kindling/v1) and an E2B-compatible REST API, and routes E2B's
// sandbox traffic into the sandboxes' guest agents. See docs/server.md.
//
// It is one process per host (per state root, which it locks). It is not
// the parent of any VM: each sandbox has its own monitor process (this
// executable re-executed, which is why main calls sandbox.MonitorMain
// first), so stopping or killing kindlingd stops no sandbox, and a new
// kindlingd re-adopts what is there.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/sandbox"
)

func main() {
	sandbox.MonitorMain()
	// Inherited descriptors stay out of the monitors and VMMs (D7); socket
	// activation's listeners are taken over from their descriptors.
	_ = kunix.MarkInheritedCloseOnExec()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() + ": run 'kindlingd --help'" }
func (u *usageError) Unwrap() error { return u.err }

// exitCode prints err, if any, as one line and returns the exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var u *usageError
	if errors.As(err, &u) {
		code = exitUsage
	}
	lines := strings.FieldsFunc(err.Error(), func(r rune) bool { return r == '\n' || r == '\r' })
	fmt.Fprintf(stderr, "kindlingd: %s\n", strings.Join(lines, "; "))
	return code
}
