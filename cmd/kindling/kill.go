package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
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
			return a.eachSandbox(cmd.Context(), args, defaultStopTimeout, func(ctx context.Context, rt sandbox.Controller, id string) error {
				return rt.Kill(ctx, id)
			})
		},
	}
}

// eachSandbox opens the runtime and runs fn for every ID (or unique ID
// prefix) in args as eachID does, each within its own timeout, and prints
// the ID of each sandbox it changed, as docker does.
func (a *app) eachSandbox(parent context.Context, args []string, timeout time.Duration, fn func(ctx context.Context, rt sandbox.Controller, id string) error) error {
	rt, err := a.controller()
	if err != nil {
		return err
	}
	return eachID(args, func(arg string) error {
		ctx, cancel := context.WithTimeout(parent, timeout)
		defer cancel()
		id, err := resolveID(ctx, rt, arg)
		if err != nil {
			return err
		}
		if err := fn(ctx, rt, id); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, id)
		return nil
	})
}
