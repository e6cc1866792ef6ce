package image

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// normalizeRef returns the fully qualified form of a tag reference
// ("alpine" → "index.docker.io/library/alpine:latest"), the form kept in
// Image.Refs. Digest references and malformed names are refused.
func normalizeRef(s string) (string, error) {
	t, err := name.NewTag(s)
	if err != nil {
		return "", errorf(ErrInvalid, "image reference %q: %v", s, err)
	}
	return t.Name(), nil
}

// FamiliarRef shortens a fully qualified reference the way people write
// it: "index.docker.io/library/alpine:3.20" → "alpine:3.20".
func FamiliarRef(ref string) string {
	for _, p := range []string{name.DefaultRegistry + "/library/", name.DefaultRegistry + "/"} {
		if rest, ok := strings.CutPrefix(ref, p); ok {
			return rest
		}
	}
	return ref
}
