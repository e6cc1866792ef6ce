package vmm

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
)

// releaseTimeout bounds `firecracker --version`.
const releaseTimeout = 5 * time.Second

// maxReleaseOutput bounds how much of `firecracker --version` is read.
const maxReleaseOutput = 64 << 10

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// ExecutableRelease asks the firecracker executable at path for its
// release (`path --version`, whose first "vX.Y.Z" word it parses). The
// caller chooses path: nothing read from disk (a state file, a snapshot or
// template manifest) may name the program to run; such records hold only a
// release, compared with this one (see SameRelease).
func ExecutableRelease(ctx context.Context, path string) (fcapi.Version, error) {
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	out := &limitedBuffer{max: maxReleaseOutput}
	errOut := &limitedBuffer{max: 4096}
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Stdout, cmd.Stderr = out, errOut
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fcapi.Version{}, fmt.Errorf("%s --version: no answer within %v", path, releaseTimeout)
		}
		if s := strings.TrimSpace(errOut.buf.String()); s != "" {
			return fcapi.Version{}, fmt.Errorf("%s --version: %w: %s", path, err, firstLine(s))
		}
		return fcapi.Version{}, fmt.Errorf("%s --version: %w", path, err)
	}
	for _, f := range strings.Fields(out.buf.String()) {
		if v, err := fcapi.ParseVersion(f); err == nil && strings.HasPrefix(f, "v") {
			return v, nil
		}
	}
	return fcapi.Version{}, fmt.Errorf("%s --version: no release in its output %q", path, firstLine(out.buf.String()))
}

// SameRelease reports whether a snapshot written by release a loads into
// release b: Firecracker loads only snapshots of its own major.minor.
func SameRelease(a, b fcapi.Version) bool { return a.Major == b.Major && a.Minor == b.Minor }

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
