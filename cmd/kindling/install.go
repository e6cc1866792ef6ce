package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/install"
)

// envAutoInstall, set to 1, makes 'kindling run' install the default
// Firecracker release when it finds none, as --install does.
const envAutoInstall = "KINDLING_AUTO_INSTALL"

const installLong = `Download an official Firecracker release for this host's architecture and
install its firecracker and jailer executables for kindling.

The release archive (firecracker-vX.Y.Z-ARCH.tgz) is downloaded from the
Firecracker project's GitHub releases, or from --base-url (else
$` + install.EnvBaseURL + `), a mirror laid out the same way:
<URL>/vX.Y.Z/firecracker-vX.Y.Z-ARCH.tgz and its .sha256.txt beside it.
The archive is checked against that .sha256.txt, and each executable
against the SHA256SUMS inside the archive; nothing else is taken from it.
HTTPS_PROXY and NO_PROXY are honoured.

The executables go into <dir>/vX.Y.Z/, and <dir>/current links to the
release installed last, which kindling uses when no Firecracker is given
by --firecracker, $` + install.EnvFirecracker + ` or PATH. <dir> is
` + install.SystemDir + ` as root, else ~/.local/share/kindling/bin
($` + install.EnvDir + ` overrides it). A release installed already is
not downloaded again; it becomes current.

Nothing is left behind when the install fails or is interrupted.

With --list, list the installed releases instead.`

const installExample = `  kindling install firecracker                    # the default release (` + install.DefaultVersion + `)
  kindling install firecracker --version v1.7.0
  kindling install firecracker --base-url https://mirror.example/firecracker
  kindling install --list`

func newInstallCommand(a *app) *cobra.Command {
	var (
		version string
		baseURL string
		list    bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:     "install firecracker [--version vX.Y.Z] | --list",
		Short:   "Download and install a Firecracker release",
		Long:    installLong,
		Example: installExample,
		Args: func(cmd *cobra.Command, args []string) error {
			if list && len(args) == 0 {
				return nil
			}
			if err := exactArgs("firecracker")(cmd, args); err != nil {
				return err
			}
			return checkInstallable(cmd, args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if list {
				if cmd.Flags().Changed("version") || cmd.Flags().Changed("base-url") {
					return usageErrorf(cmd.CommandPath(), "--list takes no --version or --base-url")
				}
				return listInstalled(a, asJSON)
			}
			o := install.Options{Version: version, BaseURL: baseURL}
			if err := checkInstallOptions(cmd, o); err != nil {
				return err
			}
			r, err := installRelease(cmd.Context(), a, o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, r)
			}
			if r.AlreadyInstalled {
				fmt.Fprintf(a.stdout, "firecracker %s is installed already in %s; it is the current release\n", r.Version, r.Dir)
				return nil
			}
			fmt.Fprintf(a.stdout, "installed firecracker %s (%s) in %s\n", r.Version, r.Arch, r.Dir)
			fmt.Fprintf(a.stdout, "  from         %s\n", r.Source)
			fmt.Fprintf(a.stdout, "  archive      sha256 %s (matches its .sha256.txt)\n", r.ArchiveSHA256)
			fmt.Fprintf(a.stdout, "  firecracker  sha256 %s (matches SHA256SUMS)\n", r.FirecrackerSHA256)
			fmt.Fprintf(a.stdout, "  jailer       sha256 %s (matches SHA256SUMS)\n", r.JailerSHA256)
			fmt.Fprintf(a.stdout, "current release: %s\n", r.Version)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&version, "version", "", "the release `vX.Y.Z` to install (default "+install.DefaultVersion+"; v1.0 or newer)")
	f.StringVar(&baseURL, "base-url", "", "download from this mirror `URL` (https://, http:// or file://; default $"+install.EnvBaseURL+", else GitHub)")
	f.BoolVar(&list, "list", false, "list the installed releases")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

const uninstallLong = `Remove an installed Firecracker release (see 'kindling install'). When it
was the current release, the newest release left becomes current.`

func newUninstallCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "uninstall firecracker VERSION",
		Short:   "Remove an installed Firecracker release",
		Long:    uninstallLong,
		Example: "  kindling uninstall firecracker v1.7.0\n  kindling install --list",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs("firecracker", "VERSION")(cmd, args); err != nil {
				return err
			}
			if err := checkInstallable(cmd, args[0]); err != nil {
				return err
			}
			if _, err := install.ParseVersion(args[1]); err != nil {
				return usageErrorf(cmd.CommandPath(), "%v", err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := install.DefaultDir()
			if err != nil {
				return err
			}
			v, _ := install.ParseVersion(args[1])
			cur, err := install.Uninstall(dir, v.String())
			switch {
			case errors.Is(err, errdefs.ErrNotFound):
				return fmt.Errorf("%w: see 'kindling install --list'", err)
			case err != nil:
				return installHint(err, dir)
			}
			if asJSON {
				return writeJSON(a.stdout, struct {
					Uninstalled string `json:"uninstalled"`
					Dir         string `json:"dir"`
					Current     string `json:"current"`
				}{v.String(), dir, cur})
			}
			fmt.Fprintf(a.stdout, "uninstalled firecracker %s from %s\n", v, dir)
			if cur == "" {
				fmt.Fprintln(a.stdout, "no release is installed now")
			} else {
				fmt.Fprintf(a.stdout, "current release: %s\n", cur)
			}
			return nil
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// checkInstallable refuses to install anything but Firecracker.
func checkInstallable(cmd *cobra.Command, what string) error {
	if what != "firecracker" {
		return usageErrorf(cmd.CommandPath(), "cannot install %q: kindling installs firecracker (with its jailer) only", what)
	}
	return nil
}

// checkInstallOptions reports a malformed --version or --base-url as a
// usage error, before anything is downloaded.
func checkInstallOptions(cmd *cobra.Command, o install.Options) error {
	if o.Version != "" {
		if _, err := install.ParseVersion(o.Version); err != nil {
			return usageErrorf(cmd.CommandPath(), "--version: %v", err)
		}
	}
	if o.BaseURL != "" && !strings.Contains(o.BaseURL, "://") {
		return usageErrorf(cmd.CommandPath(), "--base-url %q: give a URL such as https://mirror.example/firecracker or file:///srv/firecracker", o.BaseURL)
	}
	return nil
}

// listInstalled prints the installed releases.
func listInstalled(a *app, asJSON bool) error {
	dir, err := install.DefaultDir()
	if err != nil {
		return err
	}
	rs, err := install.List(dir)
	if err != nil {
		return err
	}
	if asJSON {
		if rs == nil {
			rs = []install.Release{}
		}
		return writeJSON(a.stdout, rs)
	}
	if len(rs) == 0 {
		fmt.Fprintf(a.stdout, "no Firecracker release is installed in %s: run 'kindling install firecracker'\n", dir)
		return nil
	}
	return writeTable(a.stdout, "VERSION\tARCH\tCURRENT\tFIRECRACKER", func(tw io.Writer) {
		for _, r := range rs {
			cur := ""
			if r.Current {
				cur = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Version, r.Arch, cur, r.Firecracker)
		}
	})
}

// installRelease runs install.Install with a progress bar on a terminal,
// and turns its errors into messages that say what to do.
func installRelease(ctx context.Context, a *app, o install.Options) (install.Release, error) {
	dir, err := install.DefaultDir()
	if err != nil {
		return install.Release{}, err
	}
	o.Dir = dir
	if isTerminal(a.stderr) {
		bar := &progressBar{w: a.stderr, start: time.Now()}
		o.Progress = bar.update
		defer bar.clear()
	}
	r, err := install.Install(ctx, o)
	if err != nil {
		v := o.Version
		if pv, perr := install.ParseVersion(v); perr == nil {
			v = pv.String()
		} else if v == "" {
			v = install.DefaultVersion
		}
		return install.Release{}, fmt.Errorf("install firecracker %s: %w", v, installHint(err, dir))
	}
	return r, nil
}

// installHint adds to an install error what the user can do about it.
func installHint(err error, dir string) error {
	const nothing = "nothing was installed"
	var (
		ue *install.UnsupportedError
		de *install.DownloadError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return &exitStatusError{code: exitInterrupted, err: fmt.Errorf("interrupted: %s", nothing)}
	case errors.As(err, &ue):
		return fmt.Errorf("%w: install %s (the default) or another release from v1.0 on", err, install.DefaultVersion)
	case errors.As(err, &de) && errors.Is(err, errdefs.ErrNotFound):
		return fmt.Errorf("%w: no such release there: check --version (releases: https://github.com/firecracker-microvm/firecracker/releases) or the mirror (--base-url, $%s); %s",
			err, install.EnvBaseURL, nothing)
	case errors.As(err, &de):
		return fmt.Errorf("%w: check the network connection and HTTPS_PROXY, or install from a mirror with --base-url (see docs/install.md); %s", err, nothing)
	case errors.Is(err, errdefs.ErrCorrupt):
		return fmt.Errorf("%w: the download is damaged or the mirror serves other files: try again, or fix the mirror; %s", err, nothing)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: free some space in %s, or install elsewhere with %s=DIR; %s", err, dir, install.EnvDir, nothing)
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: run as root, or set %s to a directory you can write; %s", err, install.EnvDir, nothing)
	case errors.Is(err, errdefs.ErrConflict):
		return fmt.Errorf("%w: wait for it to finish, then try again", err)
	}
	return err
}

// autoInstallWanted says whether run should install Firecracker when it
// finds none: --install, or $KINDLING_AUTO_INSTALL set to a true value.
func autoInstallWanted(flag bool) bool {
	if flag {
		return true
	}
	on, _ := strconv.ParseBool(os.Getenv(envAutoInstall))
	return on
}

// ensureFirecracker installs the default Firecracker release when auto is
// set and no Firecracker is found (given is the --firecracker or config
// file path, "" for none), so that 'kindling run --install' works on a
// fresh host. It prints what it does on stderr.
func ensureFirecracker(ctx context.Context, a *app, given string, auto bool) error {
	if !autoInstallWanted(auto) {
		return nil
	}
	if _, err := install.Find(install.Firecracker, given); !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	fmt.Fprintf(a.stderr, "kindling: no Firecracker found: installing firecracker %s (--install)\n", install.DefaultVersion)
	r, err := installRelease(ctx, a, install.Options{})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "kindling: installed firecracker %s in %s\n", r.Version, r.Dir)
	return nil
}

// progressBar draws a download's progress on one terminal line.
type progressBar struct {
	w     io.Writer
	start time.Time
	last  time.Time // when the line was last drawn
	drawn bool
}

// progressInterval is the least time between two redraws.
const progressInterval = 100 * time.Millisecond

func (b *progressBar) update(p install.Progress) {
	now := time.Now()
	if now.Sub(b.last) < progressInterval && p.Done != p.Total {
		return
	}
	b.last, b.drawn = now, true
	fmt.Fprintf(b.w, "\r%s\x1b[K", progressLine(p, now.Sub(b.start)))
}

// clear erases the bar's line.
func (b *progressBar) clear() {
	if b.drawn {
		fmt.Fprint(b.w, "\r\x1b[K")
	}
}

// progressLine renders a progress report: the file, a bar when the size is
// known, the bytes and the rate.
func progressLine(p install.Progress, elapsed time.Duration) string {
	const width = 24
	var s strings.Builder
	s.WriteString(p.File)
	if p.Total > 0 {
		n := int(p.Done * width / p.Total)
		n = min(max(n, 0), width)
		fmt.Fprintf(&s, " [%s%s] %s / %s", strings.Repeat("#", n), strings.Repeat("-", width-n), byteSize(p.Done), byteSize(p.Total))
	} else {
		fmt.Fprintf(&s, " %s", byteSize(p.Done))
	}
	if secs := elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(&s, "  %s/s", byteSize(int64(float64(p.Done)/secs)))
	}
	return s.String()
}
