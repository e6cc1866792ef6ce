package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const logsLong = `Print Firecracker's own log of a sandbox (its API calls, boot steps and
errors; not the guest's console, see 'kindling console').

With -f, keep printing what is appended until the sandbox exits or Ctrl-C.`

const logsExample = `  kindling logs web
  kindling logs -f web`

func newLogsCommand(a *app) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:     "logs [flags] ID",
		Short:   "Print a sandbox's Firecracker log",
		Long:    logsLong,
		Example: logsExample,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printLog(cmd.Context(), a, args[0], follow, sandbox.Controller.Logs)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the sandbox exits or Ctrl-C")
	return cmd
}

// printLog prints a log of sandbox id that open (Runtime.Console or
// Runtime.Logs) returns, following it with follow until the sandbox exits
// or ctx ends (Ctrl-C, which is then not an error).
func printLog(ctx context.Context, a *app, id string, follow bool, open func(sandbox.Controller, context.Context, string, sandbox.LogOptions) (io.ReadCloser, error)) error {
	rt, err := a.controller()
	if err != nil {
		return err
	}
	rc, err := open(rt, ctx, id, sandbox.LogOptions{Follow: follow})
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(a.stdout, rc)
	return err
}
