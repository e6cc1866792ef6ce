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
			return printLog(cmd.Context(), a, args[0], follow, func(in sandbox.Info) string { return in.FirecrackerLog })
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the sandbox exits or Ctrl-C")
	return cmd
}

// printLog prints the log that pick selects of sandbox id, following it
// with follow until the sandbox exits or ctx ends (Ctrl-C, which is then
// not an error).
func printLog(ctx context.Context, a *app, id string, follow bool, pick func(sandbox.Info) string) error {
	rt, err := a.runtime()
	if err != nil {
		return err
	}
	in, err := rt.Inspect(ctx, id)
	if err != nil {
		return err
	}
	if !follow {
		return copyLog(pick(in), a.stdout)
	}
	return followSandboxLog(ctx, rt, id, pick(in), a.stdout)
}

// followSandboxLog follows the log at path until sandbox id exits or ctx
// ends, then prints what is left.
func followSandboxLog(ctx context.Context, rt *sandbox.Runtime, id, path string, w io.Writer) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Wait(ctx, id) // ends when the sandbox exits or ctx is cancelled
	}()
	err := followLog(context.WithoutCancel(ctx), path, w, done)
	<-done
	return err
}
