package netdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// NetNSDir is where CreateNetNS keeps named network namespaces, as
// `ip netns add` does.
const NetNSDir = "/run/netns"

// ValidateNetNSName checks that name can name a namespace file in
// NetNSDir: 1 to 255 bytes, no '/', no NUL, not "." or "..".
func ValidateNetNSName(name string) error {
	switch {
	case name == "":
		return invalid("netns name", name, "empty")
	case len(name) > 255:
		return invalid("netns name", name, "longer than 255 bytes")
	case name == "." || name == "..":
		return invalid("netns name", name, `"." and ".." are not namespace names`)
	case strings.ContainsAny(name, "/\x00"):
		return invalid("netns name", name, "contains '/' or a NUL byte")
	}
	return nil
}

// CreateNetNS creates a new, empty network namespace and pins it by
// bind-mounting it on NetNSDir/name (what `ip netns add name` does), and
// returns that path. The namespace has only a loopback device, down.
//
// The file is created exclusively: if name is taken the error matches
// ErrExists and nothing changes, so the name can serve as a lock between
// processes. On failure nothing is left behind. The calling goroutine's
// thread is never moved: the work happens on a thread of its own.
func CreateNetNS(name string) (string, error) {
	if err := ValidateNetNSName(name); err != nil {
		return "", fmt.Errorf("create netns: %w", err)
	}
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	path := filepath.Join(NetNSDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("create netns %q: %s %w", name, path, ErrExists)
		}
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	_ = f.Close()
	if err := pinNewNetNS(path); err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	return path, nil
}

// pinNewNetNS unshares a new network namespace on a locked thread,
// bind-mounts it on path and moves the thread back.
func pinNewNetNS(path string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home := true
		defer func() {
			if home {
				runtime.UnlockOSThread()
			}
			// else: the thread stays locked and ends with the goroutine.
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer closeFD(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		home = false
		mountErr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			if mountErr == nil {
				_ = unix.Unmount(path, unix.MNT_DETACH)
			}
			errc <- fmt.Errorf("return to the original netns: %w (thread discarded)", err)
			return
		}
		home = true
		if mountErr != nil {
			errc <- fmt.Errorf("bind-mount on %s: %w", path, mountErr)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// DeleteNetNS unmounts and removes the namespace file NetNSDir/name. It is
// idempotent: a name that does not exist is not an error. The namespace
// itself, and every device in it, goes away when nothing else holds it (a
// process inside, an open descriptor, another mount).
func DeleteNetNS(name string) error {
	if err := ValidateNetNSName(name); err != nil {
		return fmt.Errorf("delete netns: %w", err)
	}
	path := filepath.Join(NetNSDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		// EINVAL: not a mount point (a half-made or already unmounted file).
		return fmt.Errorf("delete netns %q: unmount %s: %w", name, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %q: %w", name, err)
	}
	return nil
}

// ListNetNS returns the names in NetNSDir that start with prefix, sorted.
// A missing directory gives none.
func ListNetNS(prefix string) ([]string, error) {
	entries, err := os.ReadDir(NetNSDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list netns: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
