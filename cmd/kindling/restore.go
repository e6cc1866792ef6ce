package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const restoreLong = `Create a new sandbox from a snapshot written by 'kindling snapshot' and
start it where the snapshot was taken.

The drives of the snapshotted sandbox must be at the same host paths (a
snapshot taken with --own holds its own copies, wherever DIR is moved), and
the same Firecracker release must be used. The executable is yours to
choose (--firecracker, else as for 'kindling run'): a snapshot only names
the release it needs, never a program. --net gives the new sandbox its
own network interfaces (auto creates new taps), as many as the snapshot has
and in the same order; without --net the new sandbox gets taps like the
snapshotted one's (new ones where kindling created them).

Like 'kindling run', restore follows the console in the foreground until the
VM exits (Ctrl-C stops it, exit status 130), or returns at once with
--detach and prints the new ID.`

const restoreExample = `  kindling restore --detach --name web2 /var/lib/snapshots/web
  kindling restore --rm --net auto /var/lib/snapshots/web`

func newRestoreCommand(a *app) *cobra.Command {
	var (
		name    string
		nets    netListValue
		labels  labelsValue
		detach  bool
		rm      bool
		asJSON  bool
		timeout time.Duration
		fc      string
		jailer  string
		noJail  bool
	)
	cmd := &cobra.Command{
		Use:     "restore [flags] DIR",
		Short:   "Start a new sandbox from a snapshot",
		Long:    restoreLong,
		Example: restoreExample,
		Args:    exactArgs("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTimeout(cmd, timeout); err != nil {
				return err
			}
			if asJSON && !detach {
				return usageErrorf(cmd.CommandPath(), "--json needs --detach (in the foreground restore prints the console)")
			}
			if cmd.Flags().Changed("name") && name == "" {
				return usageErrorf(cmd.CommandPath(), "--name is empty: give an ID, or leave out --name for a random one")
			}
			rt, err := a.controller()
			if err != nil {
				return err
			}
			if err := a.preflight(cmd.Context(), fc); err != nil {
				return err
			}
			opts := sandbox.RestoreOptions{ID: name, Net: nets.ns, AutoRemove: rm && detach, Labels: labels.m, Firecracker: fc, Jailer: jailer, NoJailer: noJail}
			ctx := cmd.Context()
			sctx := ctx
			if timeout > 0 {
				var cancel context.CancelFunc
				sctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			info, err := rt.Restore(sctx, args[0], opts)
			if err != nil {
				if ctx.Err() != nil {
					return &exitStatusError{code: exitInterrupted, err: fmt.Errorf("restore %s: %w", args[0], errInterrupted)}
				}
				return err
			}
			return afterStart(ctx, a, rt, info, detach, asJSON, rm)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "ID of the new sandbox `ID` (default: random)")
	f.Var(&nets, "net", "network interface `auto|tap=NAME[,mac=MAC]` (repeatable)")
	addLabelFlag(f, &labels)
	f.StringVar(&fc, "firecracker", "", "firecracker executable `PATH` (default $"+sandbox.EnvFirecracker+", else PATH); it must be of the snapshot's release")
	f.StringVar(&jailer, "jailer", "", "run Firecracker through this jailer `PATH` (as root the default one; the sandbox must be jailed exactly when the snapshotted one was)")
	f.BoolVar(&noJail, "no-jailer", false, "restore without the jailer, even as root (for a snapshot of a sandbox that ran without it)")
	f.BoolVarP(&detach, "detach", "d", false, "return once the sandbox runs, and print its ID")
	f.BoolVar(&rm, "rm", false, "remove the sandbox once it has exited")
	addTimeoutFlag(cmd, &timeout)
	addJSONFlag(cmd, &asJSON)
	f.Lookup("json").Usage = "with --detach: print the sandbox as JSON instead of its ID"
	return cmd
}
