package main

import (
	"context"

	"github.com/spf13/cobra"
)

const killLong = `Kill sandboxes' VMMs at once with SIGKILL, without asking the guest to shut
down, and wait until each exit is recorded. Killing a sandbox that is not
running is not an error. The sandbox stays until 'kindling rm'.`

const killExample = `  kindling kill web`

func newKillCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "kill ID...",
		Short:   "Kill running sandboxes",
		Long:    killLong,
		Example: killExample,
		Args:    someArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.runtime()
			if err != nil {
				return err
			}
			return eachID(args, func(id string) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), defaultStopTimeout)
				defer cancel()
				return rt.Kill(ctx, id)
			})
		},
	}
}
