package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const psLong = `List the sandboxes under the state root, with their status as the host
shows it now (a sandbox whose VMM died is "exited", one whose monitor died
is "orphaned").

As docker's ps, it lists the sandboxes whose VM is up (starting, running,
paused, orphaned); -a lists them all, created and exited ones too.

Columns: ID, STATUS, PID (the VMM's, while it runs), CPUS, MEMORY, CREATED;
an exited sandbox's STATUS says its exit code and when, as in "exited (0)
3 minutes ago". -q prints only the IDs; --json prints each sandbox's full
description, as 'kindling inspect' does; --format applies a Go template to
each (its keys are the JSON's: '{{.id}} {{.status}}').

--filter narrows the list (repeatable; the same key again widens it for
status, narrows it for label):
  status=STATUS     created, starting, running, paused, exited or orphaned
                    (implies -a)
  label=KEY=VALUE   carries that label (set with --label on run, create and
                    restore)
Several filters may also be given in one flag, separated by commas:
--filter status=exited,label=app=web.`

const psExample = `  kindling ps
  kindling ps -a
  kindling ps -aq | xargs kindling rm --force
  kindling ls --json
  kindling ps --filter label=app=web
  kindling ps --filter status=exited --format '{{.id}} {{.exit.code}}'`

// Defaults the runtime applies to a spec that leaves them out.
const (
	defaultCPUs      = 1
	defaultMemoryMiB = 128
)

func newPsCommand(a *app) *cobra.Command {
	var (
		lf      listFlags
		all     bool
		filters psFilter
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
			infos = sandboxViews(filters.keep(infos, all))
			id := func(in sandbox.Info) string { return in.ID }
			return writeList(a.stdout, lf, infos, id, func() error { return writePsTable(a, infos, time.Now()) })
		},
	}
	lf.register(cmd, "print only the IDs")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "list every sandbox, created and exited ones too")
	cmd.Flags().Var(&filters, "filter", "list only sandboxes that match `KEY=VALUE`: status=STATUS or label=KEY=VALUE (repeatable)")
	return cmd
}

// psStatuses are the statuses --filter status= takes.
var psStatuses = []sandbox.Status{sandbox.Created, sandbox.Starting, sandbox.Running, sandbox.Paused, sandbox.Exited, sandbox.Orphaned}

// up says whether a sandbox of status s is listed without -a: its VM is
// (or may still be) there.
func up(s sandbox.Status) bool {
	switch s {
	case sandbox.Starting, sandbox.Running, sandbox.Paused, sandbox.Orphaned:
		return true
	}
	// A sandbox whose record is lost but whose processes the host still
	// finds ("broken: ...; 2 of its processes still run") is up too.
	return strings.HasPrefix(string(s), "broken")
}

// psFilter is ps's repeatable --filter status=STATUS,label=KEY=VALUE.
type psFilter struct {
	statuses []sandbox.Status // any of these; none: by -a
	labels   labelsValue      // all of these
	given    []string         // as given, for String
}

func (f *psFilter) Set(s string) error {
	for _, part := range splitFilters(s) {
		key, val, ok := strings.Cut(part, "=")
		switch {
		case !ok:
			return fmt.Errorf("filter %q: give status=STATUS or label=KEY=VALUE", part)
		case key == "status":
			st := sandbox.Status(val)
			if !slices.Contains(psStatuses, st) {
				return fmt.Errorf("filter %q: unknown status %q (give one of %s)", part, val, joinStatuses())
			}
			f.statuses = append(f.statuses, st)
		case key == "label":
			if err := f.labels.Set(val); err != nil {
				return err
			}
		default:
			return fmt.Errorf("filter %q: unknown key %q (give status=STATUS or label=KEY=VALUE)", part, key)
		}
	}
	f.given = append(f.given, s)
	return nil
}

// splitFilters splits "status=exited,label=app=a,b" at each comma that
// starts another filter (one followed by status= or label=), so that a
// label's value may hold commas.
func splitFilters(s string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == ',' && (strings.HasPrefix(s[i+1:], "status=") || strings.HasPrefix(s[i+1:], "label=")) {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func joinStatuses() string {
	s := make([]string, len(psStatuses))
	for i, st := range psStatuses {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

func (f *psFilter) String() string { return strings.Join(f.given, ",") }

func (f *psFilter) Type() string { return "FILTER" }

// keep returns the sandboxes of infos that the status filters (or, without
// them, all) select; the label filters were applied by the runtime.
func (f *psFilter) keep(infos []sandbox.Info, all bool) []sandbox.Info {
	out := infos[:0]
	for _, in := range infos {
		switch {
		case len(f.statuses) > 0:
			if !slices.Contains(f.statuses, in.Status) {
				continue
			}
		case !all && !up(in.Status):
			continue
		}
		out = append(out, in)
	}
	return out
}

func writePsTable(a *app, infos []sandbox.Info, now time.Time) error {
	return writeTable(a.stdout, "ID\tSTATUS\tPID\tCPUS\tMEMORY\tCREATED", func(tw io.Writer) {
		for _, in := range infos {
			pid := "-"
			if in.PID > 0 {
				pid = strconv.Itoa(in.PID)
			}
			cpus, mem := machineSize(in.Spec.VCPUs, in.Spec.MemoryMiB)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", in.ID, status(in, now), pid, cpus, mem, ago(now, in.CreatedAt))
		}
	})
}

// status renders a sandbox's status, with the exit code of an exited one
// and how long ago it exited: "exited (0) 3 minutes ago".
func status(in sandbox.Info, now time.Time) string {
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
		if !in.Exit.At.IsZero() {
			s += " " + longAgo(now, in.Exit.At)
		}
	}
	if in.RecordID != "" {
		s += fmt.Sprintf(" [state file says %q]", in.RecordID)
	}
	return s
}

// longAgo renders how long ago t was in words, as docker's ps does:
// "3 minutes ago", "1 hour ago".
func longAgo(now, t time.Time) string {
	d := now.Sub(t)
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, name)
	}
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return unit(int64(d/time.Second), "second")
	case d < time.Hour:
		return unit(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return unit(int64(d/time.Hour), "hour")
	}
	return unit(int64(d/(24*time.Hour)), "day")
}
