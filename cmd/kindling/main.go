// Command kindling runs sandboxes in Firecracker microVMs.
//
// It is the command-line face of package sandbox: it parses flags, calls the
// runtime and prints what it returns, as tables for people or as JSON
// (--json) for programs. The same executable is also each sandbox's monitor
// process, which is why main calls sandbox.MonitorMain first.
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
	os.Exit(mainExitCode())
}

// mainExitCode runs the command line of this process and returns its exit
// status. Interrupts (Ctrl-C) and SIGTERM cancel the command's context.
func mainExitCode() int {
	// Descriptors inherited from whoever started kindling must not reach
	// the monitor and Firecracker: a caller waiting on a pipe would wait
	// for the sandbox's whole life (D7).
	_ = kunix.MarkInheritedCloseOnExec() // best effort: nothing else to do without it
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
}

// Exit statuses.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130 // 128 + SIGINT, as a shell reports it
)

// usageError is a mistake in the command line: an unknown command or flag,
// missing or extra arguments, or a flag value that does not parse. It exits
// with status 2 and points at the command's help.
type usageError struct {
	cmd string // the command path, "kindling ps"
	err error
}

func (u *usageError) Error() string {
	return fmt.Sprintf("%v: run '%s --help'", u.err, u.cmd)
}

func (u *usageError) Unwrap() error { return u.err }

func usageErrorf(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// exitStatusError ends kindling with a given status. Err, when set, is
// printed like any other error; a nil Err prints nothing (the reason was
// shown already, or the status speaks for itself).
type exitStatusError struct {
	code int
	err  error
}

func (e *exitStatusError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitStatusError) Unwrap() error { return e.err }

// exitCode prints err, if any, as one line on stderr and returns the exit
// status it calls for.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var u *usageError
	var e *exitStatusError
	var h *hintedError
	switch {
	case errors.As(err, &e):
		code = e.code
		if e.err == nil {
			return code
		}
	case errors.As(err, &u):
		code = exitUsage
	case errors.As(err, &h):
		code = h.code
	}
	fmt.Fprintf(stderr, "kindling: %s\n", oneLine(err.Error()))
	return code
}

// oneLine joins the lines of a message (errors.Join separates with
// newlines) so that every error is a single line.
func oneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// errInterrupted is the cause of a command ended by Ctrl-C or SIGTERM.
var errInterrupted = errors.New("interrupted")

// run runs the kindling command line args (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	return explain(cmd, err)
}

// version, when set at build time with -ldflags "-X main.version=...",
// overrides the version read from the build info (see buildVersion).
var version string
