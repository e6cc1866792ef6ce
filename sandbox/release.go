package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// releasesDir is the state root's directory of the firecracker releases
// already asked (see executableRelease).
const releasesDir = ".releases"

// maxReleaseFile bounds a file of releasesDir.
const maxReleaseFile = 256

// executableRelease returns the release of the firecracker executable at
// path (vmm.ExecutableRelease), which the caller chose. Running
// `firecracker --version` costs a few milliseconds on every restore, so
// the answer is kept under the state root, keyed by the path and by what
// changes whenever the file does: its device, inode, size, modification
// and change times (a file replaced by a rename has another inode; one
// written in place, another change time, which no one can set back). The
// cache holds a release only, compared with a snapshot's, never anything
// that chooses a program to run; a file that cannot be read or parsed is
// asked again.
func (r *Runtime) executableRelease(ctx context.Context, path string) (fcapi.Version, error) {
	key, ok := releaseKey(path)
	if !ok {
		return vmm.ExecutableRelease(ctx, path)
	}
	dir := filepath.Join(r.st.Root(), releasesDir)
	if b, err := store.ReadFile(filepath.Join(dir, key), maxReleaseFile); err == nil {
		if v, err := fcapi.ParseVersion(strings.TrimSpace(string(b))); err == nil {
			return v, nil
		}
	}
	v, err := vmm.ExecutableRelease(ctx, path)
	if err != nil {
		return v, err
	}
	if again, ok := releaseKey(path); ok && again == key {
		// Unchanged while it was asked: keep the answer (best effort; a
		// failure only means it is asked again next time).
		if store.MkdirPrivate("release cache", dir) == nil {
			_ = store.WriteFileAtomic(dir, key, []byte(v.String()+"\n"))
		}
	}
	return v, nil
}

// releaseKey names the executable at path as it is now; false when it
// cannot be read.
func releaseKey(path string) (string, bool) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	id := fmt.Sprintf("%s\x00%d\x00%d\x00%d\x00%d.%d\x00%d.%d", path, st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16]), true
}
