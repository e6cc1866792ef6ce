package main

import (
	"github.com/spf13/cobra"
)

const resumeLong = `Resume a sandbox paused with 'kindling pause'.`

func newResumeCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "resume ID",
		Short:   "Resume a paused sandbox",
		Long:    resumeLong,
		Example: "  kindling resume web",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.controller()
			if err != nil {
				return err
			}
			return rt.Resume(cmd.Context(), args[0])
		},
	}
}
