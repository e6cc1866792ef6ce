package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"
)

const stopLong = `Stop sandboxes: ask the guest to shut down (Ctrl-Alt-Del), then SIGTERM,
then SIGKILL, all within --timeout. Stop returns once each sandbox's exit is
recorded and its taps and sockets are released. Stopping a sandbox that is
not running is not an error. The sandbox stays until 'kindling rm'.`

const stopExample = `  kindling stop web
  kindling stop --timeout 30s web db`

// defaultStopTimeout bounds a stop when --timeout is not given.
const defaultStopTimeout = 10 * time.Second

func newStopCommand(a *app) *cobra.Command {
	var timeout time.Duration
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
			rt, err := a.runtime()
			if err != nil {
				return err
			}
			return eachID(args, func(id string) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				return rt.Stop(ctx, id)
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", defaultStopTimeout, "give each sandbox this `DURATION` to stop before it is killed")
	return cmd
}
