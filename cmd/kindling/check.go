package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/preflight"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
)

const checkLong = `Check that this host can run sandboxes, and say how to fix what is missing.

Each line is ok, warn or fail: /dev/kvm and whether this user can open it
(with a hint about nested virtualisation when it is missing), the
Firecracker and jailer executables found and their releases, the cgroup
version, /dev/net/tun, the state root, tmpfs and user namespaces. A warning
is something only some uses need (the jailer when not root, tun for --net);
a failure means no sandbox can run until it is fixed. check exits with
status 1 when a check fails.

'kindling run', 'start' and 'restore' make the blocking checks (a
Firecracker executable, and KVM for a real Firecracker) before they start
anything.`

const checkExample = `  kindling check
  kindling check --json
  kindling check --firecracker /usr/local/bin/firecracker --jailer /usr/local/bin/jailer`

// checkReport is what 'kindling check --json' prints.
type checkReport struct {
	// OK is false when a check failed.
	OK     bool               `json:"ok"`
	Checks []preflight.Result `json:"checks"`
}

func newCheckCommand(a *app) *cobra.Command {
	var (
		asJSON      bool
		firecracker string
		jailer      string
	)
	cmd := &cobra.Command{
		Use:     "check [flags]",
		Short:   "Check that this host can run sandboxes",
		Long:    checkLong,
		Example: checkExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h := a.preflightHost(firecracker)
			h.Jailer = jailer
			rs := append(h.Check(cmd.Context()), checkMonitor())
			failed := preflight.Failed(rs)
			var err error
			if asJSON {
				err = writeJSON(a.stdout, checkReport{OK: !failed, Checks: rs})
			} else {
				err = writeChecks(a.stdout, rs)
			}
			if err != nil {
				return err
			}
			if failed {
				return &exitStatusError{code: exitFailure} // the lines said why
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&firecracker, "firecracker", "", "check this firecracker executable `PATH` (default $"+sandbox.EnvFirecracker+", else PATH)")
	f.StringVar(&jailer, "jailer", "", "check this jailer executable `PATH` (default $"+preflight.EnvJailer+", else PATH)")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// checkMonitor says which executable each sandbox's monitor runs: the
// small kindling-monitor next to this program, or this program again.
func checkMonitor() preflight.Result {
	r := preflight.Result{Check: "monitor", Status: preflight.OK}
	self, err := os.Executable()
	if err != nil {
		r.Status, r.Detail = preflight.Warn, fmt.Sprintf("cannot find this program's executable: %v", err)
		return r
	}
	exe, small := sandbox.MonitorExecutableFor(self)
	if small {
		r.Detail = exe + ": each sandbox's monitor is the small kindling-monitor"
		return r
	}
	r.Status = preflight.Warn
	r.Detail = "no " + sandbox.MonitorExecutableName + " next to " + self + ": each sandbox's monitor re-executes kindling, which costs more memory per sandbox"
	r.Fix = "install kindling-monitor in the same directory as kindling: go install ./cmd/kindling ./cmd/kindling-monitor"
	return r
}

// writeChecks prints one aligned line a check, its fix on the line below,
// and a closing verdict.
func writeChecks(w io.Writer, rs []preflight.Result) error {
	tw := newTable(w)
	fails, warns := 0, 0
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Status, r.Check, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", r.Fix)
		}
		switch r.Status {
		case preflight.Fail:
			fails++
		case preflight.Warn:
			warns++
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write checks: %w", err)
	}
	switch {
	case fails > 0:
		fmt.Fprintf(w, "%d failed, %d warnings: sandboxes cannot run on this host until the failures are fixed\n", fails, warns)
	case warns > 0:
		fmt.Fprintf(w, "%d warnings: sandboxes can run on this host\n", warns)
	default:
		fmt.Fprintln(w, "all checks passed: sandboxes can run on this host")
	}
	return nil
}

// preflightHost is the host as the CLI sees it: its state root, and the
// firecracker executable given (PATH or "") found the runtime's way.
func (a *app) preflightHost(firecracker string) *preflight.Host {
	root := a.root
	if root == "" {
		root = store.DefaultRoot()
	}
	return &preflight.Host{StateRoot: root, Firecracker: firecracker, FindFirecracker: preflight.LookupFirecracker, FirecrackerFix: preflight.FirecrackerHint}
}

// preflight makes the blocking host checks before a sandbox is started
// with the firecracker executable given (PATH or "").
func (a *app) preflight(ctx context.Context, firecracker string) error {
	if a.host != "" {
		return nil // the server's host is checked by the server's runtime
	}
	return a.preflightHost(firecracker).Preflight(ctx)
}
