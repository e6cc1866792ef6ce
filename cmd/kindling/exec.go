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

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/sandbox"
)

const execLong = `Run a command in a running sandbox, through the guest agent (kindling-agent)
over the sandbox's vsock device.

exec exits with the command's exit status: 128+N when signal N ended it,
126 when the program cannot be executed and 127 when it is not found, as
docker exec does. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT are forwarded to the
command (with -t, Ctrl-C is a key the command's terminal reads).

-i keeps the command's standard input open and copies kindling's to it.
-t gives the command a terminal; when kindling's standard input is a
terminal, it is put in raw mode until the command ends, and window size
changes are forwarded.

The sandbox must have been created with an agent (--agent, or an init=
that names kindling-agent); without one exec fails at once and says why.`

const execExample = `  kindling exec web -- uname -a
  kindling exec -it web -- sh
  kindling exec -e DEBUG=1 -w /srv -u app web -- ./server --check
  echo hello | kindling exec -i web -- sh -c 'cat > /tmp/greeting'`

// execOptions are the flags of exec (and of run's command).
type execOptions struct {
	interactive bool     // -i
	tty         bool     // -t
	env         []string // -e
	workdir     string   // -w
	user        string   // -u
}

func (o *execOptions) register(cmd *cobra.Command, withShort bool) {
	f := cmd.Flags()
	if withShort {
		f.BoolVarP(&o.interactive, "interactive", "i", false, "keep the command's stdin open and copy kindling's to it")
		f.BoolVarP(&o.tty, "tty", "t", false, "give the command a terminal")
	} else {
		f.BoolVarP(&o.interactive, "interactive", "i", false, "with a command: keep its stdin open and copy kindling's to it")
		f.BoolVarP(&o.tty, "tty", "t", false, "with a command: give it a terminal")
	}
	f.StringArrayVarP(&o.env, "env", "e", nil, "set `KEY=VALUE` in the command's environment (repeatable)")
	f.StringVarP(&o.workdir, "workdir", "w", "", "run the command in `DIR` of the guest")
	f.StringVarP(&o.user, "user", "u", "", "run the command as guest `USER`")
}

// check refuses bad -e values before anything is started.
func (o *execOptions) check(path string) error {
	for _, kv := range o.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usageErrorf(path, "-e %q: give KEY=VALUE", kv)
		}
	}
	return nil
}

func newExecCommand(a *app) *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:     "exec [flags] SANDBOX [--] COMMAND [ARG...]",
		Short:   "Run a command in a running sandbox",
		Long:    execLong,
		Example: execExample,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageErrorf(cmd.CommandPath(), "missing SANDBOX and COMMAND")
			case len(execCommand(args)) == 0:
				return usageErrorf(cmd.CommandPath(), "missing COMMAND (give it after the sandbox, e.g. 'kindling exec %s -- sh')", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd.CommandPath()); err != nil {
				return err
			}
			g, id, err := a.guestID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return execAttached(cmd.Context(), a, g, id, execCommand(args), o)
		},
	}
	// Flags after SANDBOX belong to the command.
	cmd.Flags().SetInterspersed(false)
	o.register(cmd, true)
	return cmd
}

// guestID is sandboxID for exec and cp: the controller's guest calls and
// the resolved ID (a unique prefix will do).
func (a *app) guestID(ctx context.Context, arg string) (sandbox.Guest, string, error) {
	c, id, err := a.sandboxID(ctx, arg)
	if err != nil {
		return nil, "", err
	}
	g, ok := c.(sandbox.Guest)
	if !ok {
		return nil, "", fmt.Errorf("commands and files in a guest through a server: %w: run kindling on the sandbox's host, without --host", sandbox.ErrNotSupported)
	}
	return g, id, nil
}

// execCommand is the command of exec's arguments SANDBOX [--] COMMAND...
// (flags stop at SANDBOX, so a '--' after it is still there).
func execCommand(args []string) []string {
	c := args[1:]
	if len(c) > 0 && c[0] == "--" {
		c = c[1:]
	}
	return c
}

// execAttached runs args in sandbox id with kindling's standard streams
// attached, forwards signals and window size changes, and returns the
// error that makes kindling exit with the command's status.
func execAttached(ctx context.Context, a *app, rt sandbox.Guest, id string, args []string, o execOptions) error {
	stdinFD := int(os.Stdin.Fd())
	stdinTTY := isTerminalFD(stdinFD)
	if o.tty && o.interactive && !stdinTTY {
		// As docker: a terminal for a command fed from a pipe would mangle
		// the input (echo, line editing).
		return fmt.Errorf("exec -it: the input is not a terminal: leave out -t, or run kindling from a terminal")
	}
	req := sandbox.ExecRequest{Args: args, Env: o.env, Dir: o.workdir, User: o.user,
		TTY: o.tty, Stdin: o.interactive, Stdout: a.stdout, Stderr: a.stderr}
	sizeFD := -1
	if o.tty {
		for _, fd := range []int{stdinFD, int(os.Stdout.Fd())} {
			if isTerminalFD(fd) {
				sizeFD = fd
				req.Rows, req.Cols = terminalSize(fd)
				break
			}
		}
	}
	// The command's life is its own: Ctrl-C is forwarded to it rather
	// than cancelling the call (which would kill it).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	bg := context.WithoutCancel(ctx)
	p, err := rt.Exec(bg, id, req)
	if err != nil {
		var ee *agent.ExecError
		if errors.As(err, &ee) {
			return &exitStatusError{code: ee.ExitCode(), err: err}
		}
		return err
	}
	defer p.Close()
	if o.tty && o.interactive && stdinTTY {
		restore, err := makeRaw(stdinFD)
		if err != nil {
			return fmt.Errorf("exec -t: raw mode for the terminal: %w", err)
		}
		defer restore()
	}
	// With -t alone the terminal's input stays open and unused, as docker
	// leaves it: a shell waits rather than read an end of file.
	if in := p.Stdin(); in != nil && o.interactive {
		go func() {
			_, _ = io.Copy(in, os.Stdin)
			_ = in.Close()
		}()
	}
	forwarded := make(chan struct{})
	defer close(forwarded)
	go func() {
		for {
			select {
			case <-forwarded:
				return
			case s := <-sigs:
				sig := s.(syscall.Signal)
				if sig == syscall.SIGWINCH {
					if sizeFD >= 0 {
						rows, cols := terminalSize(sizeFD)
						_ = p.Resize(bg, rows, cols)
					}
					continue
				}
				if err := p.Signal(bg, sig); err != nil {
					a.logger().Debug("forward signal", "signal", sig, "err", err)
				}
			}
		}
	}()
	code, err := p.Wait(bg)
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitStatusError{code: min(code, 255)}
	}
	return nil
}
