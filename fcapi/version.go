package fcapi

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a Firecracker release number. Pre holds a pre-release suffix
// such as "dev" (from "1.17.0-dev"); it is shown by String but ignored by the
// comparisons, so a development build counts as the release it leads to.
type Version struct {
	Major, Minor, Patch int
	Pre                 string
}

// minSupported is the oldest release this package speaks to.
var minSupported = Version{Major: 1}

// ParseVersion parses "1.14.2", "v1.14.2" or "1.17.0-dev".
func ParseVersion(s string) (Version, error) {
	rest := strings.TrimPrefix(strings.TrimSpace(s), "v")
	var v Version
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		v.Pre = rest[i+1:]
		rest = rest[:i]
		if v.Pre == "" {
			return Version{}, fmt.Errorf("parse firecracker version %q: empty pre-release suffix", s)
		}
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("parse firecracker version %q: want MAJOR.MINOR.PATCH", s)
	}
	var nums [3]int
	for i, p := range parts {
		if p == "" || len(p) > 9 || strings.Trim(p, "0123456789") != "" {
			return Version{}, fmt.Errorf("parse firecracker version %q: %q is not a number", s, p)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return Version{}, fmt.Errorf("parse firecracker version %q: %w", s, err)
		}
		nums[i] = n
	}
	v.Major, v.Minor, v.Patch = nums[0], nums[1], nums[2]
	return v, nil
}

// MustParseVersion is ParseVersion for constants; it panics on a bad string.
func MustParseVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String formats v as "1.14.2" (with "-pre" when there is a suffix).
func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	return s
}

// IsZero reports whether v is the zero Version (no release known).
func (v Version) IsZero() bool { return v == Version{} }

// Compare returns -1, 0 or +1 as v is older than, the same as or newer than w.
// Pre-release suffixes are ignored.
func (v Version) Compare(w Version) int {
	for _, d := range [3]int{v.Major - w.Major, v.Minor - w.Minor, v.Patch - w.Patch} {
		switch {
		case d < 0:
			return -1
		case d > 0:
			return 1
		}
	}
	return 0
}

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool { return v.Compare(w) < 0 }

// AtLeast reports whether v is w or newer.
func (v Version) AtLeast(w Version) bool { return v.Compare(w) >= 0 }

// UnsupportedVersionError reports a Firecracker release this package cannot
// drive. It matches ErrUnsupportedVersion.
type UnsupportedVersionError struct {
	Version Version
}

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("unsupported Firecracker version %s: kindling needs %d.%d or newer",
		e.Version, minSupported.Major, minSupported.Minor)
}

// Is makes errors.Is(err, ErrUnsupportedVersion) true.
func (e *UnsupportedVersionError) Is(target error) bool { return target == ErrUnsupportedVersion }

// checkSupported returns an *UnsupportedVersionError for releases below 1.0.
func checkSupported(v Version) error {
	if v.Less(minSupported) {
		return &UnsupportedVersionError{Version: v}
	}
	return nil
}
