package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

const runLong = `Create a sandbox and start it.

In the foreground (the default), run streams the sandbox's serial console to
stdout until the VM exits, then exits with Firecracker's exit status (0 when
the guest powered off cleanly; 128+N when Firecracker was killed by signal N).
Ctrl-C stops the sandbox and exits with status 130.

With --detach, run returns once the sandbox runs and prints its ID; follow
its console with 'kindling logs -f ID'.

With --rm, the sandbox is removed once it has exited (also after Ctrl-C, and
when it fails to start).

With no --kernel, run boots the demo guest built into kindling, which prints
a greeting and powers off (with --demo idle it keeps running instead). The
sandbox flags are those of 'kindling create'.

With a command after '--', run boots a root filesystem that holds
kindling-agent (given as ROOTFS, or with --rootfs; --agent is implied), runs
the command in it as 'kindling exec' does (-i, -t, -e, -w and -u as there),
stops the sandbox when the command ends and exits with the command's status.
With --rm the sandbox is then removed. With --detach the command is started
detached, as an image's process is (below).

With IMAGE (a name, ID or unique ID prefix from 'kindling image ls'), the
sandbox boots its own copy of the image's root filesystem (removed with the
sandbox; --disk-size grows it) with the guest agent as init, runs the
image's entrypoint and cmd with its env, working directory and user (a
command after '--' replaces the cmd, as with docker), stops the sandbox and
exits with the process's status. The kernel comes from --kernel, the config
file or $KINDLING_KERNEL. With --detach the process is started detached
(with -e, -w and -u as in the foreground) and run returns, leaving the
sandbox running: the process's output goes to the sandbox's console, read
with 'kindling logs', and 'kindling exec' and 'kindling cp' work in it.
The sandbox runs until 'kindling stop', whether the process ends or not.

With --template NAME, run starts a clone of a template instead of booting
(see 'kindling template'); the template fixes the machine, so only --name,
--net, --firecracker, --rm, --detach, --json and --timeout go with it.`

const runExample = `  kindling run --rm
  kindling run --rm --kernel vmlinux alpine:3.20 -- cat /etc/os-release
  kindling run -d --name web --kernel vmlinux nginx:1.27 && kindling logs -f web
  kindling run --rm --kernel vmlinux root.ext4 -- uname -a     # root.ext4 holds kindling-agent
  kindling run -d --name web --kernel vmlinux --rootfs rootfs.ext4 --net auto --memory 512M
  kindling run --rm --kernel vmlinux --wait-console 'login:' --timeout 30s
  kindling run --config web.toml --cpus 4
  kindling run -d --template base --name worker1`

// stopTimeout bounds the stop of a sandbox after Ctrl-C.
const stopTimeout = 15 * time.Second

func newRunCommand(a *app) *cobra.Command {
	var (
		sf      specFlags
		rm      bool
		detach  bool
		asJSON  bool
		timeout time.Duration
		// --template and --verify-template (template.go)
		fromTemplate   string
		verifyTemplate bool
		autoInstall    bool // --install (install.go)
		eo             execOptions
		diskSize       string // with an image: grow its copy
	)
	cmd := &cobra.Command{
		Use:     "run [flags] [IMAGE|ROOTFS] [-- COMMAND [ARG...]]",
		Short:   "Create and start a sandbox, and follow its console",
		Long:    runLong,
		Example: runExample,
		Args:    runArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTimeout(cmd, timeout); err != nil {
				return err
			}
			rootfs, command := splitRunArgs(cmd, args)
			if rootfs != "" {
				im, ok, err := resolveRunImage(cmd.Context(), a, rootfs)
				if err != nil {
					return err
				}
				if ok {
					return runImage(cmd, a, &sf, im, command, runImageOptions{
						runCommandOptions: runCommandOptions{rm: rm, detach: detach, asJSON: asJSON, timeout: timeout, template: fromTemplate, exec: eo, autoInstall: autoInstall},
						diskSize:          diskSize,
					})
				}
			}
			if diskSize != "" {
				return usageErrorf(cmd.CommandPath(), "--disk-size goes with an image: give IMAGE (see 'kindling image ls')")
			}
			if command != nil || rootfs != "" {
				return runCommand(cmd, a, &sf, rootfs, command, runCommandOptions{
					rm: rm, detach: detach, asJSON: asJSON, timeout: timeout, template: fromTemplate, exec: eo, autoInstall: autoInstall,
				})
			}
			if eo.interactive || eo.tty || len(eo.env) > 0 || eo.workdir != "" || eo.user != "" {
				return usageErrorf(cmd.CommandPath(), "-i, -t, -e, -w and -u go with a command: give it after '--'")
			}
			if asJSON && !detach {
				return usageErrorf(cmd.CommandPath(), "--json needs --detach (in the foreground run prints the console)")
			}
			ctx := cmd.Context()
			if fromTemplate != "" && a.host != "" {
				o := template.CloneOptions{ID: sf.name, AutoRemove: rm && detach, Verify: verifyTemplate, Labels: sf.labels.m}
				return runTemplateOnHost(ctx, a, cmd, fromTemplate, o, timeout, detach, asJSON, rm)
			}
			if fromTemplate != "" {
				rt, err := a.runtime()
				if err != nil {
					return err
				}
				if err := a.preflight(ctx, sf.firecracker); err != nil {
					return err
				}
				o := template.CloneOptions{ID: sf.name, Net: sf.nets.ns, AutoRemove: rm && detach, Verify: verifyTemplate, Firecracker: sf.firecracker, Labels: sf.labels.m}
				info, err := startFromTemplate(ctx, a, cmd, rt, fromTemplate, o, timeout)
				if err != nil {
					return err
				}
				return afterStart(ctx, a, rt, info, detach, asJSON, rm)
			}
			spec, err := sf.spec(cmd)
			if err != nil {
				return err
			}
			if err := a.ensureFirecrackerHere(ctx, spec.Firecracker, autoInstall); err != nil {
				return err
			}
			if err := a.preflight(ctx, spec.Firecracker); err != nil {
				return err
			}
			rt, err := a.controller()
			if err != nil {
				return err
			}
			// In the foreground, run removes the sandbox itself once it has
			// read all of the console; detached, the monitor does it.
			info, err := rt.Create(ctx, spec, sandbox.CreateOptions{AutoRemove: rm && detach})
			if err != nil {
				return err
			}
			id := info.ID
			a.logger().Debug("created sandbox", "id", id)
			info, err = startSandbox(ctx, rt, id, timeout)
			if err != nil && rm && detach && errors.Is(err, sandbox.ErrNotFound) {
				// Its monitor removed it already: the VM ran and exited
				// before Start could describe it.
				info, err = sandbox.Info{ID: id, Status: sandbox.Exited, Spec: spec}, nil
			}
			if err != nil && !detach && errors.Is(err, errInterrupted) {
				// Ctrl-C as the start ended: a VM that runs is stopped as
				// after any Ctrl-C in the foreground, with what it wrote
				// to its console printed.
				if in, ierr := rt.Inspect(context.WithoutCancel(ctx), id); ierr == nil && (in.Status == sandbox.Running || in.Status == sandbox.Paused) {
					return afterStart(ctx, a, rt, in, false, asJSON, rm)
				}
			}
			if err != nil {
				if keepFailed(ctx, rt, id, err, rm) {
					return err
				}
				// A run that did not start leaves nothing behind, not a
				// Created sandbox nobody asked for.
				return errors.Join(err, removeQuietly(context.WithoutCancel(ctx), rt, id))
			}
			return afterStart(ctx, a, rt, info, detach, asJSON, rm)
		},
	}
	f := cmd.Flags()
	sf.register(f)
	addTemplateRunFlags(f, &fromTemplate, &verifyTemplate)
	f.BoolVar(&rm, "rm", false, "remove the sandbox once it has exited")
	f.StringVar(&diskSize, "disk-size", "", "with IMAGE: grow the sandbox's copy of its root filesystem to `SIZE` (as 2G)")
	f.BoolVarP(&detach, "detach", "d", false, "return once the sandbox runs, and print its ID")
	f.BoolVar(&autoInstall, "install", false, "when no Firecracker is found, install the default release first (as $"+envAutoInstall+"=1 does)")
	addTimeoutFlag(cmd, &timeout)
	addJSONFlag(cmd, &asJSON)
	f.Lookup("json").Usage = "with --detach: print the sandbox as JSON instead of its ID"
	eo.register(cmd, false)
	return cmd
}

// afterStart finishes a run (or restore) once the sandbox runs: detached,
// it prints the sandbox (its ID, or --json its description); otherwise it
// follows the console until the VM exits.
func afterStart(ctx context.Context, a *app, rt sandbox.Controller, info sandbox.Info, detach, asJSON, rm bool) error {
	if !detach {
		return foreground(ctx, a, rt, info, rm)
	}
	if asJSON {
		return writeJSON(a.stdout, sandboxView(info))
	}
	fmt.Fprintln(a.stdout, info.ID)
	return nil
}

// checkTimeout refuses a negative --timeout.
func checkTimeout(cmd *cobra.Command, d time.Duration) error {
	if d < 0 {
		return usageErrorf(cmd.CommandPath(), "--timeout %v is negative: give a duration like 10s", d)
	}
	return nil
}

// keepFailed says whether a run whose start failed with err keeps its
// sandbox: when its VM ran and failed (it is exited, with Firecracker's log
// and the error to inspect until 'kindling rm'), and the caller neither
// gave up (timeout, Ctrl-C) nor asked for --rm.
func keepFailed(ctx context.Context, rt sandbox.Controller, id string, err error, rm bool) bool {
	if rm || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, errInterrupted) {
		return false
	}
	in, ierr := rt.Inspect(context.WithoutCancel(ctx), id)
	return ierr == nil && in.Status == sandbox.Exited
}

// removeQuietly removes sandbox id, whatever its state; a sandbox gone
// already is fine.
func removeQuietly(ctx context.Context, rt sandbox.Controller, id string) error {
	ctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if err := rt.Remove(ctx, id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return err
	}
	return nil
}

// foreground streams the console of the running sandbox until its VM exits
// and returns the exit status that calls for. Ctrl-C (ctx cancelled) stops
// the sandbox and ends with status 130. With rm, the sandbox is removed at
// the end.
func foreground(ctx context.Context, a *app, rt sandbox.Controller, info sandbox.Info, rm bool) error {
	id := info.ID
	bg := context.WithoutCancel(ctx)
	// The console is followed until the VM exits, also after Ctrl-C, which
	// stops it: what the guest wrote before it went down is printed.
	console, err := rt.Console(bg, id, sandbox.LogOptions{Follow: true})
	if err != nil {
		return err
	}
	defer console.Close()
	followed := make(chan error, 1)
	go func() {
		_, err := io.Copy(a.stdout, console)
		followed <- err
	}()

	exit, err := rt.Wait(ctx, id)
	interrupted := err != nil && ctx.Err() != nil
	var stopErr error
	if interrupted {
		a.logger().Debug("interrupted: stopping the sandbox", "id", id)
		sctx, cancel := context.WithTimeout(bg, stopTimeout)
		stopErr = rt.Stop(sctx, id)
		cancel()
	}
	if err != nil && !interrupted {
		console.Close() // the VM's end cannot be known: stop following
	}
	ferr := <-followed
	if errors.Is(ferr, io.ErrClosedPipe) {
		ferr = nil
	}
	var rmErr error
	if rm {
		rmErr = removeQuietly(bg, rt, id)
	}
	switch {
	case interrupted:
		if err := errors.Join(stopErr, rmErr); err != nil {
			return &exitStatusError{code: exitInterrupted, err: fmt.Errorf("interrupted: %w", err)}
		}
		return &exitStatusError{code: exitInterrupted}
	case err != nil:
		return errors.Join(err, rmErr)
	}
	if err := errors.Join(ferr, rmErr); err != nil {
		return err
	}
	return vmmExit(id, exit, !rm)
}

// vmmExit turns how a sandbox's VMM exited into kindling's exit status.
func vmmExit(id string, exit *sandbox.Exit, kept bool) error {
	hint := ""
	if kept {
		hint = fmt.Sprintf(": see 'kindling logs --vmm %s'", id)
	}
	switch {
	case exit == nil:
		return nil // removed by its monitor; nothing more to tell
	case exit.Error != "":
		return fmt.Errorf("sandbox %s: %s%s", id, exit.Error, hint)
	case exit.Signal != "":
		code := exitFailure
		if n := signalNumber(exit.Signal); n != 0 {
			code = 128 + n
		}
		return &exitStatusError{code: code, err: fmt.Errorf("sandbox %s: firecracker was killed by %s%s", id, exit.Signal, hint)}
	case exit.Code != 0:
		code := exit.Code
		if code < 0 || code > 255 {
			code = exitFailure
		}
		return &exitStatusError{code: code, err: fmt.Errorf("sandbox %s: firecracker exited with status %d%s", id, exit.Code, hint)}
	}
	return nil
}

// signalNumber reads a signal's name, "SIGKILL" or "killed" (as Go's
// syscall.Signal prints it); 0 when it is neither.
func signalNumber(name string) int {
	if n := unix.SignalNum(name); n != 0 {
		return int(n)
	}
	for n := syscall.Signal(1); n < 65; n++ {
		if n.String() == name {
			return int(n)
		}
	}
	return 0
}
