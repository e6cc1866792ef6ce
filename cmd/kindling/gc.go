package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
)

const gcLong = `Remove every sandbox whose VMM is gone (exited, crashed, or left behind by a
create that never finished) and release what it held: taps, sockets and
files. Sandboxes that were created but never started are kept. Prints the
IDs it removed, one a line.

gc never ends a running VM on its own. A sandbox whose state file is missing,
corrupt or from a newer kindling, or whose monitor is gone, while its VM
still runs, is reported on stderr and left alone; --kill-orphans kills such
VMs and removes their sandboxes.

gc also cleans the image store: what imports that did not finish left
(build directories no import holds, image directories without a record,
unpacked OCI archives) is removed, each path named on stderr.

A template build that was killed (SIGKILL, a crash) leaves its builder
sandbox running; gc removes the builders whose build process is gone.`

func newGCCommand(a *app) *cobra.Command {
	var (
		asJSON      bool
		killOrphans bool
	)
	cmd := &cobra.Command{
		Use:     "gc [flags]",
		Short:   "Remove exited sandboxes and what they left behind",
		Long:    gcLong,
		Example: "  kindling gc\n  kindling gc --json\n  kindling gc --kill-orphans",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.runtime()
			if err != nil {
				return err
			}
			builders, bErr := cleanBuilders(cmd.Context(), a)
			rep, gcErr := rt.Collect(cmd.Context(), sandbox.GCOptions{KillOrphans: killOrphans})
			gcErr = errors.Join(bErr, gcErr)
			removed := append(builders, rep.Removed...)
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
			for _, o := range rep.Orphans {
				fmt.Fprintln(a.stderr, orphanLine(o))
			}
			for _, k := range rep.Kept {
				fmt.Fprintf(a.stderr, "kindling: gc: kept sandbox %s: %s: use the kindling that wrote it, or 'kindling rm -f %s'\n", k.ID, k.Reason, k.ID)
			}
			return errors.Join(gcErr, cleanImages(a))
		},
	}
	cmd.Flags().BoolVar(&killOrphans, "kill-orphans", false, "kill the VMs of sandboxes that can no longer be managed, and remove those sandboxes")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// orphanLine tells what gc found running for a sandbox it could not simply
// collect.
func orphanLine(o sandbox.Orphan) string {
	pids := make([]string, len(o.PIDs))
	for i, p := range o.PIDs {
		pids[i] = strconv.Itoa(p)
	}
	if o.Killed {
		return fmt.Sprintf("kindling: gc: killed pid %s of sandbox %s (%s) and removed it", strings.Join(pids, ", "), o.ID, o.Reason)
	}
	return fmt.Sprintf("kindling: gc: left sandbox %s: %s, and pid %s still runs: 'kindling stop %s' or 'kindling gc --kill-orphans' ends it", o.ID, o.Reason, strings.Join(pids, ", "), o.ID)
}

// cleanImages removes what unfinished imports left in the image store,
// naming each path on stderr. A state root without an image store has
// nothing to clean (and gets none).
// cleanBuilders removes the builder sandboxes of template builds that were
// killed, each named on stderr, and returns their IDs.
func cleanBuilders(ctx context.Context, a *app) ([]string, error) {
	ts, err := a.templates()
	if err != nil {
		return nil, err
	}
	removed, err := ts.CleanBuilders(ctx)
	for _, id := range removed {
		fmt.Fprintf(a.stderr, "kindling: gc: removed sandbox %s, the builder of a template build that was killed\n", id)
	}
	if err != nil {
		return removed, fmt.Errorf("gc: %w", err)
	}
	return removed, nil
}

func cleanImages(a *app) error {
	root := a.root
	if root == "" {
		root = store.DefaultRoot()
	}
	if _, err := os.Stat(filepath.Join(root, imagesDir)); err != nil {
		return nil
	}
	s, err := a.images()
	if err != nil {
		return err
	}
	removed, err := s.Clean()
	for _, p := range removed {
		fmt.Fprintf(a.stderr, "kindling: gc: removed %s, left by an image import that did not finish\n", p)
	}
	if err != nil {
		return fmt.Errorf("gc: clean the image store: %w", err)
	}
	return nil
}
