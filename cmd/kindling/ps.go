package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const psLong = `List the sandboxes under the state root, with their status as the host
shows it now (a sandbox whose VMM died is "exited", one whose monitor died
is "orphaned").

Columns: ID, STATUS, PID (the VMM's, while it runs), CPUS, MEMORY, CREATED.
-q prints only the IDs; --json prints each sandbox's full description, as
'kindling inspect' does. --filter label=KEY=VALUE (repeatable) lists only
the sandboxes carrying all those labels (set with --label on run, create
and restore).`

const psExample = `  kindling ps
  kindling ps -q | xargs kindling rm --force
  kindling ls --json
  kindling ps --filter label=app=web`

// Defaults the runtime applies to a spec that leaves them out.
const (
	defaultCPUs      = 1
	defaultMemoryMiB = 128
)

func newPsCommand(a *app) *cobra.Command {
	var (
		lf      listFlags
		filters labelFilterValue
	)
	cmd := &cobra.Command{
		Use:     "ps [flags]",
		Aliases: []string{"ls"},
		Short:   "List sandboxes",
		Long:    psLong,
		Example: psExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(cmd); err != nil {
				return err
			}
			rt, err := a.controller()
			if err != nil {
				return err
			}
			infos, err := rt.List(cmd.Context(), sandbox.ListOptions{Labels: filters.labels.m})
			if err != nil {
				return err
			}
			id := func(in sandbox.Info) string { return in.ID }
			return writeList(a.stdout, lf, infos, id, func() error { return writePsTable(a, infos, time.Now()) })
		},
	}
	lf.register(cmd, "print only the IDs")
	cmd.Flags().Var(&filters, "filter", "list only sandboxes with label `label=KEY=VALUE` (repeatable)")
	return cmd
}

// labelFilterValue is ps's repeatable --filter label=KEY=VALUE.
type labelFilterValue struct{ labels labelsValue }

func (v *labelFilterValue) Set(s string) error {
	kv, ok := strings.CutPrefix(s, "label=")
	if !ok {
		return fmt.Errorf("filter %q: give label=KEY=VALUE", s)
	}
	return v.labels.Set(kv)
}

func (v *labelFilterValue) String() string { return v.labels.String() }

func (v *labelFilterValue) Type() string { return "FILTER" }

func writePsTable(a *app, infos []sandbox.Info, now time.Time) error {
	return writeTable(a.stdout, "ID\tSTATUS\tPID\tCPUS\tMEMORY\tCREATED", func(tw io.Writer) {
		for _, in := range infos {
			pid := "-"
			if in.PID > 0 {
				pid = strconv.Itoa(in.PID)
			}
			cpus, mem := machineSize(in.Spec.VCPUs, in.Spec.MemoryMiB)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", in.ID, status(in), pid, cpus, mem, ago(now, in.CreatedAt))
		}
	})
}

// status renders a sandbox's status, with the exit code of an exited one.
func status(in sandbox.Info) string {
	s := string(in.Status)
	if in.Status == sandbox.Exited && in.Exit != nil {
		switch {
		case in.Exit.Signal != "":
			s += " (" + in.Exit.Signal + ")"
		case in.Exit.Error != "":
			s += " (failed)"
		default:
			s += fmt.Sprintf(" (%d)", in.Exit.Code)
		}
	}
	return s
}
