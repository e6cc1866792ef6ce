package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/sandbox"
)

const versionLong = `Print kindling's version, and the Firecracker it would use: --firecracker,
else $KINDLING_FIRECRACKER, else 'firecracker' on PATH, else the release
'kindling install firecracker' installed, asked for its version with
'firecracker --version'.`

// versionTimeout bounds 'firecracker --version'.
const versionTimeout = 3 * time.Second

// versionInfo is what 'kindling version --json' prints.
type versionInfo struct {
	Kindling    string          `json:"kindling"`
	Go          string          `json:"go"`
	Platform    string          `json:"platform"`
	Firecracker firecrackerInfo `json:"firecracker"`
}

// firecrackerInfo describes the Firecracker executable kindling finds.
type firecrackerInfo struct {
	Path    string `json:"path,omitempty"`
	Version string `json:"version,omitempty"`
	// Error says why no version is known ("not found", or what failed).
	Error string `json:"error,omitempty"`
}

func newVersionCommand(a *app) *cobra.Command {
	var (
		asJSON bool
		fcPath string
	)
	cmd := &cobra.Command{
		Use:     "version [flags]",
		Short:   "Print kindling's version and the Firecracker it finds",
		Long:    versionLong,
		Example: "  kindling version\n  kindling version --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versionInfo{
				Kindling:    version,
				Go:          runtime.Version(),
				Platform:    runtime.GOOS + "/" + runtime.GOARCH,
				Firecracker: probeFirecracker(cmd.Context(), fcPath),
			}
			if asJSON {
				return writeJSON(a.stdout, v)
			}
			fmt.Fprintf(a.stdout, "kindling %s (%s, %s)\n", v.Kindling, v.Go, v.Platform)
			fc := v.Firecracker
			switch {
			case fc.Error != "" && fc.Path == "":
				fmt.Fprintf(a.stdout, "firecracker: %s\n", fc.Error)
			case fc.Error != "":
				fmt.Fprintf(a.stdout, "firecracker: %s: %s\n", fc.Path, fc.Error)
			default:
				fmt.Fprintf(a.stdout, "firecracker %s (%s)\n", fc.Version, fc.Path)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&fcPath, "firecracker", "", "ask this firecracker executable `PATH`")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// probeFirecracker finds the firecracker executable as the runtime would
// and asks it for its version.
func probeFirecracker(ctx context.Context, given string) firecrackerInfo {
	path, err := install.Find(install.Firecracker, given)
	if err != nil {
		return firecrackerInfo{Error: "not found: give --firecracker PATH, set " + sandbox.EnvFirecracker + ", put firecracker on PATH, or run 'kindling install firecracker'"}
	}
	if _, err := os.Stat(path); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return firecrackerInfo{Path: path, Error: "not found: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	c := exec.CommandContext(ctx, path, "--version")
	c.Stdout, c.Stderr = &out, &errOut
	c.WaitDelay = time.Second
	if err := c.Run(); err != nil {
		why := err.Error()
		if ctx.Err() != nil {
			why = fmt.Sprintf("no answer to --version within %v", versionTimeout)
		} else if s := strings.TrimSpace(errOut.String()); s != "" {
			why += ": " + oneLine(s)
		}
		return firecrackerInfo{Path: path, Error: why}
	}
	v := parseFirecrackerVersion(out.String())
	if v == "" {
		return firecrackerInfo{Path: path, Error: fmt.Sprintf("unexpected --version output %q", oneLine(out.String()))}
	}
	return firecrackerInfo{Path: path, Version: v}
}

// parseFirecrackerVersion finds "vX.Y.Z" in `firecracker --version` output
// ("Firecracker v1.14.2" on its first line).
func parseFirecrackerVersion(out string) string {
	for _, f := range strings.Fields(out) {
		if len(f) > 1 && f[0] == 'v' && f[1] >= '0' && f[1] <= '9' {
			return f
		}
	}
	return ""
}
