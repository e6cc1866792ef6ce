package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

const pauseLong = `Pause a running sandbox's vCPUs. Its memory and devices stay; 'kindling
resume' continues it where it stopped. 'kindling ps' shows it as paused.`

func newPauseCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "pause ID",
		Short:   "Pause a running sandbox",
		Long:    pauseLong,
		Example: "  kindling pause web",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, id, err := a.sandboxID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := rt.Pause(cmd.Context(), id); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, id)
			return nil
		},
	}
}
