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
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/sandbox"
)

const versionLong = `Print kindling's version, and the Firecracker it would use: --firecracker,
else $KINDLING_FIRECRACKER, else 'firecracker' on PATH, else the release
'kindling install firecracker' installed, asked for its version with
'firecracker --version'.

kindling's version comes from the Go build: the module version ('go install
...@v1.2.3'), or for a build from a git checkout a pseudo-version with the
commit, followed by the commit, its time, and whether the checkout had
local changes. A build without that information says "devel".
'kindling --version' prints the first line only.`

// versionTimeout bounds 'firecracker --version'.
const versionTimeout = 3 * time.Second

// versionInfo is what 'kindling version --json' prints.
type versionInfo struct {
	Kindling string `json:"kindling"`
	// Commit, CommitTime and Modified describe the git checkout kindling
	// was built from, when the build recorded it.
	Commit      string          `json:"commit,omitempty"`
	CommitTime  string          `json:"commit_time,omitempty"`
	Modified    bool            `json:"modified,omitempty"`
	Go          string          `json:"go"`
	Platform    string          `json:"platform"`
	Firecracker firecrackerInfo `json:"firecracker"`
	// JSONShapes is the version of the JSON shapes the commands print
	// (docs/cli.md): a key renamed or removed, or a meaning changed, bumps it.
	JSONShapes int `json:"json_shapes"`
}

// jsonShapes is the version of the CLI's JSON shapes (versionInfo.JSONShapes).
const jsonShapes = 1

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
			b := buildVersion()
			v := versionInfo{
				Kindling:    b.version,
				Commit:      b.commit,
				CommitTime:  b.time,
				Modified:    b.modified,
				Go:          runtime.Version(),
				Platform:    runtime.GOOS + "/" + runtime.GOARCH,
				Firecracker: probeFirecracker(cmd.Context(), fcPath),
				JSONShapes:  jsonShapes,
			}
			if asJSON {
				return writeJSON(a.stdout, v)
			}
			fmt.Fprintf(a.stdout, "kindling %s (%s, %s)\n", v.Kindling, v.Go, v.Platform)
			if line := b.commitLine(); line != "" {
				fmt.Fprintln(a.stdout, line)
			}
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

// build describes how kindling was built.
type build struct {
	version  string // "v1.2.3", a pseudo-version, or "devel"
	commit   string // the full git commit, "" when not recorded
	time     string // the commit's time (RFC 3339), "" when not recorded
	modified bool   // the checkout had local changes
}

// buildVersion reads this binary's build information; -ldflags "-X
// main.version=..." overrides the version.
func buildVersion() build {
	info, _ := debug.ReadBuildInfo()
	return describeBuild(info, version)
}

// describeBuild reads info (nil when the binary has none). A version set at
// link time wins over the module's.
func describeBuild(info *debug.BuildInfo, linked string) build {
	b := build{version: "devel"}
	if info != nil {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			b.version = v
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.commit = s.Value
			case "vcs.time":
				b.time = s.Value
			case "vcs.modified":
				b.modified = s.Value == "true"
			}
		}
	}
	if linked != "" {
		b.version = linked
	}
	return b
}

// commitLine is the human line about the commit: "commit 5dcdd3c8110c
// (2026-12-01T01:19:10Z, with local changes)"; "" when none is recorded.
func (b build) commitLine() string {
	if b.commit == "" {
		return ""
	}
	s := "commit " + b.commit
	var notes []string
	if b.time != "" {
		notes = append(notes, b.time)
	}
	if b.modified {
		notes = append(notes, "with local changes")
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, ", ") + ")"
	}
	return s
}

// short is what 'kindling --version' prints after "kindling version ":
// the version, and the commit when the version does not name it already.
func (b build) short() string {
	s := b.version
	if b.commit != "" && !strings.Contains(s, shortCommit(b.commit)) {
		s += ", commit " + shortCommit(b.commit)
		if b.modified {
			s += " with local changes"
		}
	}
	return s
}

// shortCommit is the first 12 digits of a commit, as Go's pseudo-versions
// name it.
func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// addVersionFlag gives the root command --version (and -v), which prints
// "kindling version V" as docker does.
func addVersionFlag(root *cobra.Command) {
	root.Version = buildVersion().short()
	root.SetVersionTemplate("kindling version {{.Version}}\n")
}
