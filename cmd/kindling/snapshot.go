package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const snapshotLong = `Write a snapshot of a running (or paused) sandbox into DIR: its microVM
state and its guest memory. The sandbox is paused while the snapshot is
taken and goes on running afterwards. Start a copy from it with
'kindling restore DIR'; it needs the same Firecracker release, and its
drives must still be at the same paths then.

With --own the snapshot holds copies of what the sandbox could change or
lose — its writable drives, its hotplug slots' files and its kernel —
taken while the guest is paused, and names them relative to DIR: it then
restores whatever happens to the sandbox and those files, and DIR can be
moved or copied. Read-only drives are not copied: they must still be at
their paths.`

const snapshotExample = `  kindling snapshot web /var/lib/snapshots/web
  kindling restore --name web2 --detach /var/lib/snapshots/web
  kindling snapshot --own web ./web-snap && mv ./web-snap /srv/snapshots/`

func newSnapshotCommand(a *app) *cobra.Command {
	var own bool
	cmd := &cobra.Command{
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
			if _, err := rt.Snapshot(cmd.Context(), id, args[1], sandbox.SnapshotOptions{Own: own}); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&own, "own", false, "copy the sandbox's writable drives and kernel into DIR: the snapshot stands alone and can be moved")
	return cmd
}
