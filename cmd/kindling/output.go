package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// newTable returns a tabwriter for a human table; Flush it when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
}

// writeTable prints a human table: the tab-separated header, then the
// lines that rows writes.
func writeTable(w io.Writer, header string, rows func(tw io.Writer)) error {
	tw := newTable(w)
	fmt.Fprintln(tw, header)
	rows(tw)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// listFlags are the -q and --json flags of a listing command.
type listFlags struct {
	quiet  bool // print only the keys
	asJSON bool
}

// register adds -q, whose usage is quietUsage, and --json to cmd.
func (f *listFlags) register(cmd *cobra.Command, quietUsage string) {
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, quietUsage)
	addJSONFlag(cmd, &f.asJSON)
}

// check refuses -q with --json.
func (f listFlags) check(cmd *cobra.Command) error {
	if f.quiet && f.asJSON {
		return usageErrorf(cmd.CommandPath(), "-q and --json (or --format) do not go together: pick one")
	}
	return nil
}

// writeList prints list as f asks: as JSON with --json, one key a line
// with -q, else with table.
func writeList[T any](w io.Writer, f listFlags, list []T, key func(T) string, table func() error) error {
	switch {
	case f.asJSON:
		return writeJSON(w, list)
	case f.quiet:
		for _, x := range list {
			fmt.Fprintln(w, key(x))
		}
		return nil
	}
	return table()
}

// addJSONFlag adds --json to cmd, and --format, a template over that JSON.
func addJSONFlag(cmd *cobra.Command, p *bool) {
	cmd.Flags().BoolVar(p, "json", false, "print JSON instead of text (shapes in docs/cli.md)")
	if cmd.Flags().Lookup("format") == nil {
		addFormatFlag(cmd, p)
	}
}

// ago renders how long ago t was, coarsely: "12s ago", "3m ago", "5h ago",
// "2d ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// machineSize renders the vCPU count and memory size of a machine, with
// the runtime's defaults for those left out (0).
func machineSize(cpus, memMiB int) (int, string) {
	if cpus == 0 {
		cpus = defaultCPUs
	}
	if memMiB == 0 {
		memMiB = defaultMemoryMiB
	}
	return cpus, mib(memMiB)
}

// mib renders a memory size in MiB.
func mib(n int) string {
	if n%1024 == 0 && n >= 1024 {
		return fmt.Sprintf("%dGiB", n/1024)
	}
	return fmt.Sprintf("%dMiB", n)
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// byteSize renders n bytes in binary units: "512 B", "3.4 MiB".
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 3 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGT"[i])
}
