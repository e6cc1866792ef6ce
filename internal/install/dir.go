package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// EnvDir names the environment variable that overrides the install
// directory (for tests, and for hosts that keep tools elsewhere).
const EnvDir = "KINDLING_INSTALL_DIR"

// Install directories, when $KINDLING_INSTALL_DIR is unset.
const (
	// SystemDir is used by root, and searched by everyone.
	SystemDir = "/usr/local/lib/kindling/bin"
	// userSubdir is used by other users, under $XDG_DATA_HOME, else
	// ~/.local/share.
	userSubdir = "kindling/bin"
)

// Names inside an install directory.
const (
	currentLink  = "current"      // symlink to the release in use: "v1.14.2"
	manifestFile = "release.json" // in each release directory
	tmpPrefix    = ".tmp-"        // staging directories, removed when stale
)

// DefaultDir returns the install directory: $KINDLING_INSTALL_DIR, else
// SystemDir for root, else ~/.local/share/kindling/bin (under
// $XDG_DATA_HOME when that is set).
func DefaultDir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return filepath.Abs(d)
	}
	if os.Geteuid() == 0 {
		return SystemDir, nil
	}
	return userDir()
}

func userDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, userSubdir), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the install directory: %w: set %s", err, EnvDir)
	}
	return filepath.Join(home, ".local", "share", userSubdir), nil
}

// searchDirs lists the install directories Find looks in, in order: the
// override alone when set; else the user's own and the system one.
func searchDirs() []string {
	if d := os.Getenv(EnvDir); d != "" {
		if a, err := filepath.Abs(d); err == nil {
			return []string{a}
		}
		return nil
	}
	if os.Geteuid() == 0 {
		return []string{SystemDir}
	}
	var dirs []string
	if d, err := userDir(); err == nil {
		dirs = append(dirs, d)
	}
	return append(dirs, SystemDir)
}

// Release is an installed Firecracker release.
type Release struct {
	// Version is the release: "v1.14.2".
	Version string `json:"version"`
	// Arch is Firecracker's architecture name: "x86_64" or "aarch64".
	Arch string `json:"arch"`
	// Dir holds the release's executables: <install dir>/v1.14.2.
	Dir string `json:"dir"`
	// Firecracker and Jailer are the executables' paths.
	Firecracker string `json:"firecracker"`
	Jailer      string `json:"jailer"`
	// FirecrackerSHA256 and JailerSHA256 are the executables' SHA-256
	// digests (hex), as verified at install.
	FirecrackerSHA256 string `json:"firecracker_sha256,omitempty"`
	JailerSHA256      string `json:"jailer_sha256,omitempty"`
	// Source is the archive's URL and ArchiveSHA256 its verified digest.
	Source        string `json:"source,omitempty"`
	ArchiveSHA256 string `json:"archive_sha256,omitempty"`
	// InstalledAt is when it was installed.
	InstalledAt time.Time `json:"installed_at,omitzero"`
	// Current says the "current" link points at this release.
	Current bool `json:"current"`
	// AlreadyInstalled, from Install, says nothing was downloaded: the
	// release was there already (and was made current).
	AlreadyInstalled bool `json:"already_installed,omitempty"`
}

// manifest is release.json, written into each release directory at
// install. Bump manifestVersion when its form changes.
type manifest struct {
	FormatVersion int               `json:"format_version"`
	Release       string            `json:"release"`
	Arch          string            `json:"arch"`
	Source        string            `json:"source"`
	ArchiveSHA256 string            `json:"archive_sha256"`
	SHA256        map[string]string `json:"sha256"` // by executable: "firecracker", "jailer"
	InstalledAt   time.Time         `json:"installed_at"`
}

const manifestVersion = 1

func (m manifest) release(dir string) Release {
	d := filepath.Join(dir, m.Release)
	return Release{
		Version:           m.Release,
		Arch:              m.Arch,
		Dir:               d,
		Firecracker:       filepath.Join(d, string(Firecracker)),
		Jailer:            filepath.Join(d, string(Jailer)),
		FirecrackerSHA256: m.SHA256[string(Firecracker)],
		JailerSHA256:      m.SHA256[string(Jailer)],
		Source:            m.Source,
		ArchiveSHA256:     m.ArchiveSHA256,
		InstalledAt:       m.InstalledAt,
	}
}

// readRelease describes the release installed as dir/name. A release
// directory without both executables is not installed (errdefs.ErrNotFound);
// a missing or unreadable manifest leaves the digests empty.
func readRelease(dir, name string) (Release, error) {
	v, err := ParseVersion(name)
	if err != nil || v.String() != name {
		return Release{}, fmt.Errorf("release %q: %w", name, errdefs.ErrNotFound)
	}
	r := Release{Version: name, Dir: filepath.Join(dir, name)}
	if b, err := os.ReadFile(filepath.Join(r.Dir, manifestFile)); err == nil {
		var m manifest
		if json.Unmarshal(b, &m) == nil && m.FormatVersion == manifestVersion && m.Release == name {
			r = m.release(dir)
		}
	}
	r.Firecracker = filepath.Join(r.Dir, string(Firecracker))
	r.Jailer = filepath.Join(r.Dir, string(Jailer))
	for _, p := range []string{r.Firecracker, r.Jailer} {
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			return Release{}, fmt.Errorf("release %s in %s: %w", name, dir, errdefs.ErrNotFound)
		}
	}
	if cur, err := os.Readlink(filepath.Join(dir, currentLink)); err == nil && cur == name {
		r.Current = true
	}
	return r, nil
}

// List returns the releases installed in dir ("" for DefaultDir), newest
// first. A directory that does not exist holds none.
func List(dir string) ([]Release, error) {
	dir, err := dirOrDefault(dir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list installed releases: %w", err)
	}
	var rs []Release
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "v") {
			continue
		}
		if r, err := readRelease(dir, e.Name()); err == nil {
			rs = append(rs, r)
		}
	}
	sortNewestFirst(rs)
	return rs, nil
}

func sortNewestFirst(rs []Release) {
	slices.SortFunc(rs, func(a, b Release) int {
		va, _ := ParseVersion(a.Version)
		vb, _ := ParseVersion(b.Version)
		switch {
		case vb.Less(va):
			return -1
		case va.Less(vb):
			return 1
		}
		return 0
	})
}

// Uninstall removes an installed release from dir ("" for DefaultDir).
// When it was current, the newest release left becomes current (or there
// is no current link any more). It returns the release now current, ""
// for none. A release that is not installed gives errdefs.ErrNotFound.
func Uninstall(dir, version string) (current string, err error) {
	v, err := ParseVersion(version)
	if err != nil {
		return "", err
	}
	if dir, err = dirOrDefault(dir); err != nil {
		return "", err
	}
	name := v.String()
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("firecracker %s in %s: %w", name, dir, errdefs.ErrNotFound)
		}
		return "", fmt.Errorf("uninstall firecracker %s: %w", name, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Rename first, so the release disappears at once even when removing
	// its files is slow or fails half-way.
	gone, err := os.MkdirTemp(dir, tmpPrefix+"rm-")
	if err != nil {
		return "", fmt.Errorf("uninstall firecracker %s: %w", name, err)
	}
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(gone, name)); err != nil {
		os.Remove(gone)
		return "", fmt.Errorf("uninstall firecracker %s: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return "", fmt.Errorf("uninstall firecracker %s: remove its files: %w", name, err)
	}
	cur, _ := os.Readlink(filepath.Join(dir, currentLink))
	if cur != name {
		return cur, syncDir(dir)
	}
	left, err := List(dir)
	if err != nil {
		return "", err
	}
	if len(left) == 0 {
		if err := os.Remove(filepath.Join(dir, currentLink)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("uninstall firecracker %s: remove the current link: %w", name, err)
		}
		return "", syncDir(dir)
	}
	if err := setCurrent(dir, left[0].Version); err != nil {
		return "", err
	}
	return left[0].Version, nil
}

func dirOrDefault(dir string) (string, error) {
	if dir == "" {
		return DefaultDir()
	}
	return filepath.Abs(dir)
}

// setCurrent points dir/current at the release name, replacing the link
// atomically (a new link renamed over the old one).
func setCurrent(dir, name string) error {
	tmp := filepath.Join(dir, fmt.Sprintf("%slink-%d", tmpPrefix, time.Now().UnixNano()))
	if err := os.Symlink(name, tmp); err != nil {
		return fmt.Errorf("link current to %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, currentLink)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link current to %s: %w", name, err)
	}
	return syncDir(dir)
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// lockDir takes an exclusive flock on dir itself (no lock file is left
// behind), so that two installs or uninstalls never interleave. It does
// not wait: another holder gives errdefs.ErrConflict.
//
// The sandbox store has its own lock files (internal/store); this lock is
// on a directory of another owner and lifetime, so it is not built on them.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		d.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("install directory %s is in use by another kindling install or uninstall: %w", dir, errdefs.ErrConflict)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { d.Close() }, nil // closing drops the lock
}

// removeStale removes staging directories and links that an install or
// uninstall killed before its cleanup left; the caller holds the lock, so
// none of them is in use.
func removeStale(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}
