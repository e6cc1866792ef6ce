package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const rmLong = `Remove sandboxes and everything they own: their directory (state, logs,
sockets) and the taps kindling created for them. A running sandbox is
refused unless --force is given; then it is killed first.`

const rmExample = `  kindling rm web
  kindling rm --force $(kindling ps -q)`

func newRmCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] ID...",
		Aliases: []string{"remove"},
		Short:   "Remove sandboxes",
		Long:    rmLong,
		Example: rmExample,
		Args:    someArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.eachSandbox(cmd.Context(), args, defaultStopTimeout, func(ctx context.Context, rt sandbox.Controller, id string) error {
				return rt.Remove(ctx, id, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running sandbox first")
	return cmd
}
