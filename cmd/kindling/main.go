// Command kindling runs sandboxes in Firecracker microVMs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintln(os.Stderr, "kindling:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "kindling:", err)
		os.Exit(1)
	}
}

// usageError marks an error in the command line; it exits with status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

const usage = `kindling runs sandboxes in Firecracker microVMs.

Usage:
  kindling <command> [flags]

Commands:
  version    print kindling's version

Run 'kindling <command> --help' for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	_ = ctx
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given; run 'kindling --help'")}
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "version":
		fs := flag.NewFlagSet("version", flag.ContinueOnError)
		fs.SetOutput(stderr)
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return usageError{err}
		}
		fmt.Fprintln(stdout, "kindling", version)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q; run 'kindling --help'", args[0])}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
