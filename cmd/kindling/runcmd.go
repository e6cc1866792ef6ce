package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// runArgs accepts run's positional arguments: an optional ROOTFS before
// '--' and a command after it.
func runArgs(cmd *cobra.Command, args []string) error {
	before := len(args)
	if d := cmd.ArgsLenAtDash(); d >= 0 {
		before = d
		if d == len(args) {
			return usageErrorf(cmd.CommandPath(), "nothing after '--': give the command to run")
		}
	}
	if before > 1 {
		return usageErrorf(cmd.CommandPath(), "unexpected argument %q (a command goes after '--')", args[1])
	}
	return nil
}

// splitRunArgs returns run's ROOTFS argument and its command (nil without
// '--').
func splitRunArgs(cmd *cobra.Command, args []string) (rootfs string, command []string) {
	before := len(args)
	if d := cmd.ArgsLenAtDash(); d >= 0 {
		before, command = d, args[d:]
	}
	if before == 1 {
		rootfs = args[0]
	}
	return rootfs, command
}

// runCommandOptions are the flags of run that matter to a command run.
type runCommandOptions struct {
	rm, detach, autoInstall bool
	asJSON                  bool // with detach: print the sandbox as JSON
	timeout                 time.Duration
	template                string
	exec                    execOptions
}

// runCommand is 'kindling run [ROOTFS] -- COMMAND': boot a sandbox whose
// guest runs the agent, run the command in it, stop the sandbox (and with
// --rm remove it) and exit with the command's status. With --detach the
// command is started detached (see runDetached) and the sandbox left
// running.
func runCommand(cmd *cobra.Command, a *app, sf *specFlags, rootfs string, command []string, o runCommandOptions) error {
	path := cmd.CommandPath()
	switch {
	case command == nil:
		return usageErrorf(path, "ROOTFS %q without a command: give the command after '--', or the root filesystem with --rootfs (or an image: see 'kindling image ls')", rootfs)
	case o.detach && (o.exec.interactive || o.exec.tty):
		return usageErrorf(path, "-i and -t go with a foreground run: a detached command reads nothing and writes to the sandbox's console ('kindling logs'); leave out --detach, or give them to 'kindling exec'")
	case o.asJSON && !o.detach:
		return usageErrorf(path, "--json needs --detach (in the foreground run prints the command's output)")
	case rootfs != "" && cmd.Flags().Changed("rootfs"):
		return usageErrorf(path, "the root filesystem is given twice (ROOTFS %q and --rootfs): give one", rootfs)
	}
	if err := o.exec.check(path); err != nil {
		return err
	}
	ctx := cmd.Context()
	var (
		rt   *sandbox.Runtime
		info sandbox.Info
		err  error
	)
	if o.template != "" {
		if rootfs != "" {
			return usageErrorf(path, "ROOTFS %q does not go with --template: the template fixes the root filesystem", rootfs)
		}
		if rt, err = a.runtime(); err != nil {
			return err
		}
		co := template.CloneOptions{ID: sf.name, Net: sf.nets.ns, Firecracker: sf.firecracker, Labels: sf.labels.m, AutoRemove: o.rm && o.detach}
		if info, err = startFromTemplate(ctx, a, cmd, rt, o.template, co, o.timeout); err != nil {
			return err
		}
	} else {
		spec, err := sf.spec(cmd)
		if err != nil {
			return err
		}
		if rootfs != "" {
			if _, err := os.Stat(rootfs); err != nil {
				return fmt.Errorf("root filesystem %q: %w: give an ext4 file that holds kindling-agent, or an image (see 'kindling image ls')", rootfs, err)
			}
			spec.Rootfs = &sandbox.Disk{Path: rootfs}
		}
		if spec.Rootfs == nil {
			return usageErrorf(path, "a command needs a root filesystem that holds kindling-agent: give ROOTFS or --rootfs")
		}
		if spec.Kernel == "" {
			return usageErrorf(path, "a command needs a Linux --kernel (the built-in demo guest runs no agent)")
		}
		spec.Agent = true
		if err := ensureFirecracker(ctx, a, spec.Firecracker, o.autoInstall); err != nil {
			return err
		}
		if rt, err = a.runtime(); err != nil {
			return err
		}
		created, err := rt.Create(ctx, spec, sandbox.CreateOptions{AutoRemove: o.rm && o.detach})
		if err != nil {
			return err
		}
		if info, err = startSandbox(ctx, rt, created.ID, o.timeout); err != nil {
			if o.rm {
				err = errors.Join(err, removeQuietly(context.WithoutCancel(ctx), rt, created.ID))
			}
			return err
		}
	}
	id := info.ID
	if o.detach {
		return runDetached(ctx, a, rt, info, command, o)
	}
	a.logger().Debug("running command", "sandbox", id, "args", command)
	runErr := execAttached(ctx, a, rt, id, command, o.exec)
	return endCommandRun(ctx, rt, id, o.rm, runErr)
}

// endCommandRun ends a run whose command returned runErr: the sandbox is
// stopped (with rm removed), and the command's status is kept.
func endCommandRun(ctx context.Context, rt *sandbox.Runtime, id string, rm bool, runErr error) error {
	bg := context.WithoutCancel(ctx)
	var endErr error
	if rm {
		endErr = removeQuietly(bg, rt, id)
	} else {
		sctx, cancel := context.WithTimeout(bg, stopTimeout)
		endErr = rt.Stop(sctx, id)
		cancel()
	}
	if endErr != nil {
		endErr = fmt.Errorf("after the command: %w", endErr)
		var st *exitStatusError
		if errors.As(runErr, &st) && st.err == nil {
			return &exitStatusError{code: st.code, err: endErr}
		}
		return errors.Join(runErr, endErr)
	}
	return runErr
}

// runDetached ends 'run -d' of a command (or an image's process) in the
// running sandbox info: it starts args detached, with its output on the
// sandbox's console (see sandbox.Runtime.Spawn), and prints the sandbox's
// ID (or with --json its description). A process that cannot start fails
// the run, which removes the sandbox; a missing program exits 127, one
// that cannot be executed 126, as in the foreground.
func runDetached(ctx context.Context, a *app, rt *sandbox.Runtime, info sandbox.Info, args []string, o runCommandOptions) error {
	id := info.ID
	a.logger().Debug("starting the command detached", "sandbox", id, "args", args)
	pid, err := rt.Spawn(ctx, id, sandbox.ExecRequest{Args: args, Env: o.exec.env, Dir: o.exec.workdir, User: o.exec.user})
	if err != nil {
		// A run whose process did not start leaves nothing behind.
		err = errors.Join(err, removeQuietly(context.WithoutCancel(ctx), rt, id))
		var ee *agent.ExecError
		if errors.As(err, &ee) {
			return &exitStatusError{code: ee.ExitCode(), err: err}
		}
		return err
	}
	a.logger().Debug("command started", "sandbox", id, "pid", pid)
	if o.asJSON {
		return writeJSON(a.stdout, sandboxView(info))
	}
	fmt.Fprintln(a.stdout, id)
	return nil
}
