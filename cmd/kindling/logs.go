package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const logsLong = `Print what a sandbox's guest wrote on its serial console, as 'docker logs'
prints a container's output. With --vmm, print Firecracker's own log instead
(its API calls, boot steps and errors), which tells why a VM did not start.

The console log is bounded: kindling keeps the current part and the one
before it (console.log.1 then console.log in the sandbox directory), so very
old output may be gone. With -f, keep printing new output, across those
rotations, until the sandbox exits or Ctrl-C; the follow sleeps until the
file changes (inotify), so a quiet guest costs nothing.

The logs of a sandbox stay until it is removed, also when it failed to start.
'kindling console' is another name for this command.`

const logsExample = `  kindling logs web
  kindling logs -f web
  kindling logs --vmm web       # why did it not start?`

func newLogsCommand(a *app) *cobra.Command {
	var follow, vmmLog bool
	cmd := &cobra.Command{
		Use:     "logs [flags] ID",
		Aliases: []string{"console"},
		Short:   "Print a sandbox's console output (or, with --vmm, Firecracker's log)",
		Long:    logsLong,
		Example: logsExample,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			open := sandbox.Controller.Console
			if vmmLog {
				open = sandbox.Controller.Logs
			}
			return printLog(cmd.Context(), a, args[0], follow, open)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the sandbox exits or Ctrl-C")
	cmd.Flags().BoolVar(&vmmLog, "vmm", false, "print Firecracker's own log instead of the guest's console")
	return cmd
}

// printLog prints a log of sandbox id that open (Runtime.Console or
// Runtime.Logs) returns, following it with follow until the sandbox exits
// or ctx ends (Ctrl-C, which is then not an error).
func printLog(ctx context.Context, a *app, id string, follow bool, open func(sandbox.Controller, context.Context, string, sandbox.LogOptions) (io.ReadCloser, error)) error {
	rt, id, err := a.sandboxID(ctx, id)
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
