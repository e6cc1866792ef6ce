package install

import (
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// DefaultVersion is the release Install fetches when none is asked for: the
// newest release kindling is tested against.
const DefaultVersion = "v1.14.2"

// TestedVersions are the releases kindling's tests run against, newest
// first. Other v1 releases are installed too, with no promise.
var TestedVersions = []string{"v1.14.2", "v1.7.0"}

// minVersion is the oldest release kindling drives: fcapi refuses older ones
// (their API differs: ht_enabled, vsock_id, no GET /version).
var minVersion = Version{Major: 1}

// DefaultBaseURL is where official releases are downloaded from: the
// Firecracker project's GitHub release assets. Under it, a release's files
// are at <base>/vX.Y.Z/<file>.
const DefaultBaseURL = "https://github.com/firecracker-microvm/firecracker/releases/download"

// EnvBaseURL names the environment variable that replaces DefaultBaseURL,
// for mirrors and air-gapped hosts (an http://, https:// or file:// URL).
const EnvBaseURL = "KINDLING_RELEASE_URL"

// Version is a Firecracker release number.
type Version struct {
	Major, Minor, Patch int
}

// String returns the release as Firecracker tags it: "v1.14.2".
func (v Version) String() string {
	return fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Less reports whether v is an older release than w.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// ParseVersion reads a release number, "v1.14.2" or "1.14.2". Pre-release
// and build suffixes are refused: only published releases are installed.
// Errors match errdefs.ErrInvalid.
func ParseVersion(s string) (Version, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	parts := strings.Split(t, ".")
	var n [3]int
	ok := len(parts) == 3
	for i := 0; ok && i < 3; i++ {
		p := parts[i]
		// Digits only: Atoi would take "+1", and "01" is not how releases
		// are tagged.
		if p == "" || len(p) > 6 || strings.TrimLeft(p, "0123456789") != "" || (len(p) > 1 && p[0] == '0') {
			ok = false
			break
		}
		n[i], _ = strconv.Atoi(p)
	}
	if !ok {
		return Version{}, fmt.Errorf("release %q: %w: want vX.Y.Z, such as %s", s, errdefs.ErrInvalid, DefaultVersion)
	}
	return Version{Major: n[0], Minor: n[1], Patch: n[2]}, nil
}

// UnsupportedError is the refusal of a release kindling cannot drive. It
// matches errdefs.ErrNotSupported.
type UnsupportedError struct {
	Version Version
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("Firecracker %s is not supported: kindling drives v1.0 and newer (older releases have a different API); tested: %s",
		e.Version, strings.Join(TestedVersions, ", "))
}

// Is makes the error match errdefs.ErrNotSupported.
func (e *UnsupportedError) Is(target error) bool { return target == errdefs.ErrNotSupported }

// resolveVersion parses s ("" for DefaultVersion) and refuses releases
// below v1.0.
func resolveVersion(s string) (Version, error) {
	if s == "" {
		s = DefaultVersion
	}
	v, err := ParseVersion(s)
	if err != nil {
		return Version{}, err
	}
	if v.Less(minVersion) {
		return Version{}, &UnsupportedError{Version: v}
	}
	return v, nil
}

// Arch returns Firecracker's name for a Go architecture: x86_64 for amd64,
// aarch64 for arm64, the only two Firecracker is released for. Errors match
// errdefs.ErrNotSupported.
func Arch(goarch string) (string, error) {
	switch goarch {
	case "amd64":
		return "x86_64", nil
	case "arm64":
		return "aarch64", nil
	}
	return "", fmt.Errorf("architecture %s: %w: Firecracker is released for amd64 (x86_64) and arm64 (aarch64) only", goarch, errdefs.ErrNotSupported)
}

// hostArch is Arch of this program's architecture.
func hostArch() (string, error) { return Arch(runtime.GOARCH) }

// release names the files of one release for one architecture.
type release struct {
	version Version
	arch    string
}

func (r release) suffix() string { return r.version.String() + "-" + r.arch }

// archive is the release asset's name: firecracker-v1.14.2-x86_64.tgz.
func (r release) archive() string { return "firecracker-" + r.suffix() + ".tgz" }

// checksumFile is the asset beside the archive holding its SHA-256, as
// `sha256sum` prints it.
func (r release) checksumFile() string { return r.archive() + ".sha256.txt" }

// member is the name, inside the archive's release directory, of one of
// the release's executables: firecracker-v1.14.2-x86_64.
func (r release) member(k Kind) string { return string(k) + "-" + r.suffix() }

// topDir is the archive's top directory: release-v1.14.2-x86_64.
func (r release) topDir() string { return "release-" + r.suffix() }

// resolveBaseURL picks the base URL: the one given, else $KINDLING_RELEASE_URL,
// else DefaultBaseURL, and checks it. Errors match errdefs.ErrInvalid.
func resolveBaseURL(given string) (*url.URL, error) {
	s := given
	if s == "" {
		s = os.Getenv(EnvBaseURL)
	}
	if s == "" {
		s = DefaultBaseURL
	}
	u, err := url.Parse(s)
	if err == nil {
		switch {
		case u.Scheme == "http" || u.Scheme == "https":
			if u.Host == "" {
				err = fmt.Errorf("no host")
			}
		case u.Scheme == "file":
			if u.Path == "" || u.Host != "" && u.Host != "localhost" {
				err = fmt.Errorf("want file:///absolute/dir")
			}
		default:
			err = fmt.Errorf("scheme %q: want https://, http:// or file://", u.Scheme)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("release URL %q: %w: %w", s, errdefs.ErrInvalid, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// assetURL is the URL of a release's file under base: <base>/vX.Y.Z/<file>.
func assetURL(base *url.URL, v Version, file string) string {
	return base.JoinPath(v.String(), file).String()
}
