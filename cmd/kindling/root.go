package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/template"
)

// app holds the global flags and the output streams every command uses.
type app struct {
	root   string // --root; "" for $KINDLING_ROOT, else /run/kindling
	debug  bool   // --debug
	host   string // --host; "" to run sandboxes on this host, daemonless
	stdout io.Writer
	stderr io.Writer
}

// runtime opens the state root. Commands that work on this host's state
// root only (gc, threads, templates, images) call it; with --host they
// say so instead of acting on the local root.
func (a *app) runtime(extra ...sandbox.Option) (*sandbox.Runtime, error) {
	if a.host != "" {
		return nil, fmt.Errorf("this command works on the local state root only, not through a server: unset --host and $%s", remote.EnvHost)
	}
	opts := extra
	if a.debug {
		h := slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
		opts = append(opts, sandbox.WithLogger(slog.New(h)))
	}
	rt, err := sandbox.Open(a.root, opts...)
	if errors.Is(err, store.ErrNotPrivate) {
		return nil, err // it names the directory and the fix
	}
	if err != nil {
		root := a.root
		if root == "" {
			root = store.DefaultRoot()
		}
		return nil, fmt.Errorf("open state root %s: %w: give a writable --root DIR or set %s", root, err, store.EnvRoot)
	}
	return rt, nil
}

// controller returns what the sandbox commands drive: the server --host
// (or $KINDLING_HOST) names, else the local runtime (daemonless).
func (a *app) controller(extra ...sandbox.Option) (sandbox.Controller, error) {
	if a.host == "" {
		return a.runtime(extra...)
	}
	c, err := remote.New(remote.Config{Host: a.host, APIKey: os.Getenv(envAPIKey)})
	if err != nil {
		return nil, fmt.Errorf("--host: %w", err)
	}
	return c, nil
}

// envAPIKey names the environment variable holding the API key sent to a
// server reached over TCP.
const envAPIKey = "KINDLING_API_KEY"

// ensureFirecrackerHere installs Firecracker when asked and none is
// found, on this host only: a server's host is the server's business.
func (a *app) ensureFirecrackerHere(ctx context.Context, given string, auto bool) error {
	if a.host != "" {
		return nil
	}
	return ensureFirecracker(ctx, a, given, auto)
}

// templates opens the state root's template store.
func (a *app) templates() (*template.Store, error) {
	rt, err := a.runtime()
	if err != nil {
		return nil, err
	}
	return template.Open(rt, a.templateOptions()...)
}

// templateOptions are the template store's options: its debug logger.
func (a *app) templateOptions() []template.Option {
	if !a.debug {
		return nil
	}
	return []template.Option{template.WithLogger(a.logger())}
}

// logger is the debug logger of the CLI itself (discarding without --debug).
func (a *app) logger() *slog.Logger {
	if !a.debug {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

const rootLong = `kindling runs sandboxes in Firecracker microVMs.

A sandbox is a microVM with an ID, a directory under the state root, a
monitor process that outlives the command that started it, a bounded serial
console log and, optionally, drives, taps and a network namespace.

With no --kernel, kindling boots a tiny demo guest built into the binary, so
'kindling run --rm' works on any machine with /dev/kvm and a Firecracker.

Firecracker is found through --firecracker, else $KINDLING_FIRECRACKER, else
'firecracker' on PATH, else the release 'kindling install firecracker' installed.`

const rootExample = `  kindling run --rm                      # boot the demo guest, print its greeting
  kindling run -d --name web --kernel vmlinux --rootfs rootfs.ext4 --memory 512M
  kindling ps
  kindling logs -f web
  kindling stop web && kindling rm web`

// newRootCommand builds the whole command tree.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "kindling",
		Short:         "Run sandboxes in Firecracker microVMs",
		Long:          rootLong,
		Example:       rootExample,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs, // unknown commands are reported by RunE
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd.CommandPath(), "no command given")
			}
			return unknownCommand(cmd, args[0])
		},
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		return a.useFormat(cmd)
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SuggestionsMinimumDistance = 2
	// Commands that only group others (kindling, kindling drive) run just to
	// report a missing or unknown subcommand: do not show them as runnable.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Print the help of a command: its description, flags and examples.",
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := cmd.Root().Find(args)
			if err != nil {
				return &usageError{cmd: cmd.Root().CommandPath(), err: err}
			}
			if len(rest) > 0 {
				return unknownCommand(target, rest[0])
			}
			return target.Help()
		},
	})
	addVersionFlag(root)
	pf := root.PersistentFlags()
	pf.StringVar(&a.root, "root", "", "state root `DIR` (default $"+store.EnvRoot+", else "+store.DefaultRootDir+")")
	pf.BoolVar(&a.debug, "debug", false, "write debug logs to stderr")
	pf.StringVar(&a.host, "host", os.Getenv(remote.EnvHost), "drive the sandboxes of the kindlingd at `ADDR` (unix:///PATH, http://127.0.0.1:PORT or https://HOST:PORT; default $"+remote.EnvHost+"; API key in $"+envAPIKey+")")

	root.AddCommand(
		newRunCommand(a),
		newExecCommand(a),
		newCpCommand(a),
		newCreateCommand(a),
		newStartCommand(a),
		newPsCommand(a),
		newInspectCommand(a),
		newStopCommand(a),
		newKillCommand(a),
		newRmCommand(a),
		newPauseCommand(a),
		newResumeCommand(a),
		newLogsCommand(a),
		newThreadsCommand(a),
		newDriveCommand(a),
		newSnapshotCommand(a),
		newRestoreCommand(a),
		newTemplateCommand(a),
		newPoolCommand(a),
		newImageCommand(a),
		newGCCommand(a),
		newEgressCommand(a),
		newVersionCommand(a),
		newInstallCommand(a),
		newUninstallCommand(a),
		newCheckCommand(a),
	)
	addCompletions(a, root)
	return root
}

// unknownCommand is the usage error for a subcommand that does not exist,
// with cobra's spelling suggestions.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q", name)
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
	}
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%s", msg)}
}

// exactArgs accepts exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usageErrorf(cmd.CommandPath(), "missing %s", strings.Join(names[len(args):], " and "))
		case len(args) > len(names):
			return usageErrorf(cmd.CommandPath(), "unexpected argument %q", args[len(names)])
		}
		return nil
	}
}

// noArgs accepts no positional arguments.
func noArgs(cmd *cobra.Command, args []string) error { return exactArgs()(cmd, args) }

// someArgs accepts one or more of the named argument.
func someArgs(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageErrorf(cmd.CommandPath(), "missing %s", name)
		}
		return nil
	}
}
