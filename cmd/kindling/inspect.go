package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const inspectLong = `Print the full description of one or more sandboxes as a JSON array:
status (reconciled with the host), spec, PIDs, exit, paths of the sandbox's
directory, API socket, console log and Firecracker log, taps and hotplug
slots.

IDs that do not exist are reported on stderr and make the exit status 1;
the others are still printed.`

const inspectExample = `  kindling inspect web
  kindling inspect web db | jq '.[].status'`

func newInspectCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "inspect ID...",
		Short:   "Describe sandboxes as JSON",
		Long:    inspectLong,
		Example: inspectExample,
		Args:    someArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.controller()
			if err != nil {
				return err
			}
			infos := []sandbox.Info{}
			var errs []error
			for _, arg := range args {
				id, err := resolveID(cmd.Context(), rt, arg)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				in, err := rt.Inspect(cmd.Context(), id)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				infos = append(infos, in)
			}
			if len(infos) > 0 || len(errs) == 0 {
				if err := writeJSON(a.stdout, sandboxViews(infos)); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		},
	}
	// The output is always JSON; --json is accepted for symmetry.
	addJSONFlag(cmd, &asJSON)
	cmd.Flags().Lookup("json").Usage = "print JSON (always on)"
	return cmd
}

// eachID runs fn for every ID in args, going on after a failure; it returns
// the failures joined (one line each when printed).
func eachID(args []string, fn func(id string) error) error {
	var errs []error
	for _, id := range args {
		if err := fn(id); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 1 {
		return fmt.Errorf("%d of %d sandboxes failed: %w", len(errs), len(args), errors.Join(errs...))
	}
	return errors.Join(errs...)
}
