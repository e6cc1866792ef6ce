package main

import (
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
			rt, err := a.controller()
			if err != nil {
				return err
			}
			return rt.Pause(cmd.Context(), args[0])
		},
	}
}
