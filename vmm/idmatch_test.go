package vmm

import (
	"regexp"
	"testing"
)

// FuzzIDMatchers checks the hand-written ID matchers against the regexps
// they stand for.
func FuzzIDMatchers(f *testing.F) {
	for _, s := range []string{"", "a", "vm-1", "drive_0", "pool", "pool12", "pool1x", "0123abcd-ef", "ünï", "a b"} {
		f.Add(s)
	}
	pairs := []struct {
		name string
		m    interface{ MatchString(string) bool }
		re   *regexp.Regexp
	}{
		{"vm id", vmIDRe, regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)},
		{"device id", deviceIDRe, regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)},
		{"partuuid", partUUIDRe, regexp.MustCompile(`^[0-9A-Fa-f-]{1,36}$`)},
		{"pool id", poolIDRe, regexp.MustCompile(`^pool[0-9]+$`)},
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range pairs {
			if got, want := p.m.MatchString(s), p.re.MatchString(s); got != want {
				t.Errorf("%s matcher(%q) = %v, regexp says %v", p.name, s, got, want)
			}
		}
	})
}
