package store

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"simple", "web1", true},
		{"one char", "a", true},
		{"digit first", "0abc", true},
		{"punctuation inside", "a_b.c-d", true},
		{"trailing dot", "a.", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"hex from NewID", "0123456789ab", true},
		{"empty", "", false},
		{"65 chars", strings.Repeat("a", 65), false},
		{"dot", ".", false},
		{"dotdot", "..", false},
		{"hidden", ".locks", false},
		{"traversal", "../x", false},
		{"deep traversal", "a/../../etc", false},
		{"slash", "a/b", false},
		{"absolute", "/etc", false},
		{"leading dash", "-rf", false},
		{"leading underscore", "_a", false},
		{"space", "a b", false},
		{"newline", "a\nb", false},
		{"nul", "a\x00b", false},
		{"backslash", `a\b`, false},
		{"unicode letter", "café", false},
		{"unicode digit", "٣abc", false},
		{"fullwidth", "ａｂｃ", false},
		{"colon", "a:b", false},
		{"glob", "a*", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateID(tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ValidateID(%q) = %v, want ErrInvalidID", tt.id, err)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, idRule) {
				t.Errorf("error %q does not state the rule", msg)
			}
		})
	}
}

func TestValidateIDMessage(t *testing.T) {
	err := ValidateID("../x")
	want := `sandbox ID "../x": must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}`
	if err == nil || err.Error() != want {
		t.Fatalf("ValidateID(../x) = %v, want %s", err, want)
	}
	long := strings.Repeat("x", 10000)
	if msg := ValidateID(long).Error(); len(msg) > 300 {
		t.Errorf("message for a 10000-byte ID is %d bytes, want it shortened", len(msg))
	}
}

var idPattern = regexp.MustCompile(`^` + idRule + `$`)

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"a", "..", ".", "../x", "-rf", "a/b", strings.Repeat("z", 64),
		strings.Repeat("z", 65), "é", "a\x00", "A.b_c-d", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateID(id)
		if want := idPattern.MatchString(id); (err == nil) != want {
			t.Fatalf("ValidateID(%q) = %v, regexp says valid=%v", id, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ValidateID(%q) = %v, does not match ErrInvalidID", id, err)
			}
			return
		}
		// Accepted: a single, safe path element.
		const root = "/root/of/store"
		p := filepath.Join(root, id)
		if filepath.Dir(p) != root || filepath.Base(p) != id || filepath.Clean(id) != id {
			t.Fatalf("accepted %q escapes or is not one element: %q", id, p)
		}
		if id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") || id[0] == '-' || id[0] == '.' {
			t.Fatalf("accepted unsafe ID %q", id)
		}
	})
}
