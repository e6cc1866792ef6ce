package main

import (
	"fmt"

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
			rt, id, err := a.sandboxID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := rt.Resume(cmd.Context(), id); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, id)
			return nil
		},
	}
}
