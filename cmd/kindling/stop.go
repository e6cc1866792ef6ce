package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

const stopLong = `Stop sandboxes: ask the guest to shut down (Ctrl-Alt-Del), then SIGTERM,
then SIGKILL, all within --timeout. Stop returns once each sandbox's exit is
recorded and its taps and sockets are released. Stopping a sandbox that is
not running is not an error. The sandbox stays until 'kindling rm'.`

const stopExample = `  kindling stop web
  kindling stop --timeout 30s web db
  kindling stop --grace 0 web        # skip Ctrl-Alt-Del: SIGTERM at once`

// defaultStopTimeout bounds a stop when --timeout is not given.
const defaultStopTimeout = 10 * time.Second

func newStopCommand(a *app) *cobra.Command {
	var timeout, grace time.Duration
	cmd := &cobra.Command{
		Use:     "stop [flags] ID...",
		Short:   "Stop running sandboxes",
		Long:    stopLong,
		Example: stopExample,
		Args:    someArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usageErrorf(cmd.CommandPath(), "--timeout must be more than zero: give a duration like 10s")
			}
			if grace < 0 {
				return usageErrorf(cmd.CommandPath(), "--grace must not be negative: give a duration like 2s, or 0 to skip Ctrl-Alt-Del")
			}
			var opts []sandbox.StopOption
			if cmd.Flags().Changed("grace") {
				opts = append(opts, sandbox.StopGrace(grace))
			}
			return a.eachSandbox(cmd.Context(), args, timeout, func(ctx context.Context, rt sandbox.Controller, id string) error {
				return rt.Stop(ctx, id, opts...)
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", defaultStopTimeout, "give each sandbox this `DURATION` to stop before it is killed")
	cmd.Flags().DurationVar(&grace, "grace", vmm.DefaultStopGrace, "wait this `DURATION` for the guest to shut down after Ctrl-Alt-Del before SIGTERM; 0 skips it (default 0 for the demo guest)")
	return cmd
}
