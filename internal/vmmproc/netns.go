package vmmproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDirs are where `ip netns` keeps named namespaces, in lookup order.
var netnsDirs = []string{"/run/netns", "/var/run/netns"}

// resolveNetNS turns a namespace name or path into the path of its file.
func resolveNetNS(ns string) (string, error) {
	if strings.ContainsRune(ns, '/') {
		return filepath.Abs(ns)
	}
	if ns == "." || ns == ".." {
		return "", fmt.Errorf("netns %q: not a namespace name", ns)
	}
	for _, d := range netnsDirs {
		p := filepath.Join(d, ns)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("netns %q: not in %s: %w", ns, strings.Join(netnsDirs, " or "), os.ErrNotExist)
}

// InNetNS runs fn on a thread moved into the network namespace ns (a name
// under /run/netns or a path) and back; "" just calls fn. A thread that
// cannot be moved back is left locked, so that the Go runtime ends it.
func InNetNS(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	path, err := resolveNetNS(ns)
	if err != nil {
		return err
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer unix.Close(target)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home := true
		defer func() {
			if home {
				runtime.UnlockOSThread()
			}
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			home = false
			ferr = errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
		}
		done <- ferr
	}()
	return <-done
}
