package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const snapshotLong = `Write a snapshot of a running (or paused) sandbox into DIR: its microVM
state and its guest memory. The sandbox is paused while the snapshot is
taken and goes on running afterwards. Start a copy from it with
'kindling restore DIR'; its drives must still be at the same paths then,
and it needs the same Firecracker release.`

const snapshotExample = `  kindling snapshot web /var/lib/snapshots/web
  kindling restore --name web2 --detach /var/lib/snapshots/web`

func newSnapshotCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "snapshot ID DIR",
		Short:   "Snapshot a running sandbox into a directory",
		Long:    snapshotLong,
		Example: snapshotExample,
		Args:    exactArgs("ID", "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, id, err := a.sandboxID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if _, err := rt.Snapshot(cmd.Context(), id, args[1], sandbox.SnapshotOptions{}); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, id)
			return nil
		},
	}
}
