package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

const gcLong = `Remove every sandbox whose VMM is gone (exited, crashed, or left behind by a
create that never finished) and release what it held: taps, sockets and
files. Sandboxes that were created but never started are kept. Prints the
IDs it removed, one a line.`

func newGCCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "gc [flags]",
		Short:   "Remove exited sandboxes and what they left behind",
		Long:    gcLong,
		Example: "  kindling gc\n  kindling gc --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.runtime()
			if err != nil {
				return err
			}
			removed, gcErr := rt.GC(cmd.Context())
			if removed == nil {
				removed = []string{}
			}
			if asJSON {
				if err := writeJSON(a.stdout, removed); err != nil {
					return err
				}
			} else {
				for _, id := range removed {
					fmt.Fprintln(a.stdout, id)
				}
			}
			return gcErr
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}
