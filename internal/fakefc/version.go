package fakefc

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a Firecracker release number, such as 1.14.2.
type Version struct {
	Major, Minor, Patch int
}

// DefaultVersion is the release emulated when FAKEFC names none.
var DefaultVersion = Version{1, 14, 2}

// ParseVersion parses "1.14.2" or "v1.14.2". A missing patch number is 0.
func ParseVersion(s string) (Version, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	parts := strings.Split(t, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return Version{}, fmt.Errorf("parse version %q: want MAJOR.MINOR.PATCH", s)
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return Version{}, fmt.Errorf("parse version %q: bad number %q", s, p)
		}
		n[i] = x
	}
	return Version{n[0], n[1], n[2]}, nil
}

// mustVersion parses a version literal of the field table.
func mustVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String returns "1.14.2".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// IsZero reports whether v is the zero Version (used as "no bound").
func (v Version) IsZero() bool { return v == Version{} }

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than o.
func (v Version) Compare(o Version) int {
	switch {
	case v.Major != o.Major:
		return sign(v.Major - o.Major)
	case v.Minor != o.Minor:
		return sign(v.Minor - o.Minor)
	default:
		return sign(v.Patch - o.Patch)
	}
}

// AtLeast reports whether v is o or newer.
func (v Version) AtLeast(o Version) bool { return v.Compare(o) >= 0 }

// within reports whether v lies in [since, until); a zero bound is open.
func (v Version) within(since, until Version) bool {
	if !since.IsZero() && !v.AtLeast(since) {
		return false
	}
	if !until.IsZero() && v.AtLeast(until) {
		return false
	}
	return true
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}
