package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const startLong = `Start a created (or exited) sandbox and print its ID.

Start returns once the VM runs, or, when the sandbox was created with
--wait-console TEXT, once its console has shown TEXT. If the VM does not come
up, the error says why and nothing is left running. --timeout bounds the
start; the sandbox's life is not bounded by it.

The executables the sandbox runs are the caller's: a sandbox created with
another firecracker (or jailer) than the default one starts only when that
file is given again with --firecracker (--jailer). Its state file alone
never chooses what runs.`

const startExample = `  kindling start web
  kindling start --timeout 5s --json web`

func newStartCommand(a *app) *cobra.Command {
	var (
		timeout time.Duration
		asJSON  bool
		fc      string
		jailer  string
	)
	cmd := &cobra.Command{
		Use:     "start [flags] ID",
		Short:   "Start a created sandbox",
		Long:    startLong,
		Example: startExample,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTimeout(cmd, timeout); err != nil {
				return err
			}
			rt, id, err := a.sandboxID(cmd.Context(), args[0], sandbox.WithExecutables(fc, jailer))
			if err != nil {
				return err
			}
			if err := a.preflight(cmd.Context(), fc); err != nil {
				return err
			}
			info, err := startSandbox(cmd.Context(), rt, id, timeout)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, sandboxView(info))
			}
			fmt.Fprintln(a.stdout, info.ID)
			return nil
		},
	}
	addTimeoutFlag(cmd, &timeout)
	addJSONFlag(cmd, &asJSON)
	cmd.Flags().StringVar(&fc, "firecracker", "", "the firecracker executable `PATH` the sandbox was created with, when it is not the default one")
	cmd.Flags().StringVar(&jailer, "jailer", "", "the jailer `PATH` the sandbox was created with, when it is not the default one")
	return cmd
}

func addTimeoutFlag(cmd *cobra.Command, p *time.Duration) {
	cmd.Flags().DurationVar(p, "timeout", 0, "give up starting after `DURATION` (e.g. 10s; default: the runtime's limit)")
}

// startSandbox starts sandbox id, bounded by timeout when it is not zero.
// A start cut short by Ctrl-C is reported as errInterrupted.
func startSandbox(ctx context.Context, rt sandbox.Controller, id string, timeout time.Duration) (sandbox.Info, error) {
	sctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	info, err := rt.Start(sctx, id)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return info, &exitStatusError{code: exitInterrupted, err: fmt.Errorf("start sandbox %q: %w", id, errInterrupted)}
		case sctx.Err() != nil:
			return info, fmt.Errorf("start sandbox %q: not running after %v: give a longer --timeout, or see 'kindling logs %s': %w", id, timeout, id, err)
		}
		return info, err
	}
	return info, nil
}
