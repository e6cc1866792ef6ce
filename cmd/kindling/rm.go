package main

import (
	"context"

	"github.com/spf13/cobra"
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
			rt, err := a.runtime()
			if err != nil {
				return err
			}
			return eachID(args, func(id string) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), defaultStopTimeout)
				defer cancel()
				return rt.Remove(ctx, id, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running sandbox first")
	return cmd
}
