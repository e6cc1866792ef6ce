package main

import (
	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const consoleLong = `Print what a sandbox's guest wrote on its serial console.

The console log is bounded: kindling keeps the current part and the one
before it (console.log.1 then console.log in the sandbox directory), so very
old output may be gone. With -f, keep printing new output, across those
rotations, until the sandbox exits or Ctrl-C.`

const consoleExample = `  kindling console web
  kindling console -f web`

func newConsoleCommand(a *app) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:     "console [flags] ID",
		Short:   "Print a sandbox's serial console output",
		Long:    consoleLong,
		Example: consoleExample,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printLog(cmd.Context(), a, args[0], follow, sandbox.Controller.Console)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the sandbox exits or Ctrl-C")
	return cmd
}
