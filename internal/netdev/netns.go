package netdev

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDirs are the directories where `ip netns` keeps named network
// namespaces, in the order ResolveNetNS looks for a bare name.
var netnsDirs = []string{"/run/netns", "/var/run/netns"}

// ResolveNetNS turns a network namespace name or path into the path of a
// network namespace file. A bare name (no '/') is looked up in /run/netns,
// then /var/run/netns ("blue" → /run/netns/blue); anything else is a path,
// made absolute. The result must exist (else the error matches ErrNotFound) and be a network
// namespace: a file on nsfs, such as an `ip netns` bind mount or
// /proc/PID/ns/net, whose namespace type is network (else ErrNotNetNS).
func ResolveNetNS(nameOrPath string) (string, error) {
	path, fd, err := openNetNS(nameOrPath)
	if err != nil {
		return "", err
	}
	closeFD(fd)
	return path, nil
}

// openNetNS resolves nameOrPath as ResolveNetNS does and returns the path
// and an open (close-on-exec) descriptor of the namespace.
func openNetNS(nameOrPath string) (string, int, error) {
	if nameOrPath == "" {
		return "", -1, invalid("netns", nameOrPath, "empty")
	}
	if strings.ContainsRune(nameOrPath, '/') {
		path, err := filepath.Abs(nameOrPath)
		if err != nil {
			return "", -1, fmt.Errorf("netns %q: %w", nameOrPath, err)
		}
		fd, err := openNetNSPath(path)
		return path, fd, err
	}
	if nameOrPath == "." || nameOrPath == ".." {
		return "", -1, invalid("netns name", nameOrPath, `"." and ".." are not namespace names`)
	}
	for _, dir := range netnsDirs {
		path := filepath.Join(dir, nameOrPath)
		fd, err := openNetNSPath(path)
		if err == nil {
			return path, fd, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return "", -1, err
		}
	}
	return "", -1, fmt.Errorf("netns %q: not in %s: %w", nameOrPath, strings.Join(netnsDirs, " or "), ErrNotFound)
}

// openNetNSPath opens path and checks that it is a network namespace. It
// looks at the file system type before opening, so a path that is not a
// namespace (a device, a FIFO) is never opened.
func openNetNSPath(path string) (int, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("netns %s: %w", path, ErrNotFound)
		}
		return -1, fmt.Errorf("netns %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return -1, fmt.Errorf("netns %s: not a namespace file (an `ip netns` name is a bind mount; is it mounted?): %w", path, ErrNotNetNS)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("netns %s: %w", path, err)
	}
	// Check again on the descriptor: the path may have changed since statfs.
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		closeFD(fd)
		return -1, fmt.Errorf("netns %s: not a namespace file: %w", path, ErrNotNetNS)
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		closeFD(fd)
		return -1, fmt.Errorf("netns %s: get namespace type: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		closeFD(fd)
		return -1, fmt.Errorf("netns %s: a %s namespace: %w", path, nsTypeName(typ), ErrNotNetNS)
	}
	return fd, nil
}

func nsTypeName(typ int) string {
	switch typ {
	case unix.CLONE_NEWNS:
		return "mount"
	case unix.CLONE_NEWUTS:
		return "uts"
	case unix.CLONE_NEWIPC:
		return "ipc"
	case unix.CLONE_NEWUSER:
		return "user"
	case unix.CLONE_NEWPID:
		return "pid"
	case unix.CLONE_NEWCGROUP:
		return "cgroup"
	case unix.CLONE_NEWTIME:
		return "time"
	}
	return fmt.Sprintf("type %#x", typ)
}

// errGoexit is Do's error when fn ends its goroutine with runtime.Goexit
// (for example through t.FailNow) instead of returning.
var errGoexit = errors.New("function called runtime.Goexit instead of returning")

// Do runs fn inside the network namespace nsPath (a name or path, resolved
// as ResolveNetNS does) and returns fn's error. With nsPath "" it just
// calls fn.
//
// fn runs on a fresh goroutine locked to its OS thread, which is moved into
// the namespace and back; Do waits for it. Sockets and tap descriptors fn
// opens stay in the namespace after Do returns. fn must not rely on
// goroutines it starts being in the namespace: they run on other threads. A
// panic in fn is re-raised in the caller once the thread is back.
//
// If the thread cannot be moved back, Do returns an error and leaves the
// thread locked, so that the Go runtime ends it rather than reuse it in the
// wrong namespace.
func Do(nsPath string, fn func() error) error {
	if nsPath == "" {
		return fn()
	}
	path, target, err := openNetNS(nsPath)
	if err != nil {
		return err
	}
	defer closeFD(target)

	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		r := result{err: errGoexit}
		home := false // the thread is in its original namespace
		defer func() {
			if home {
				runtime.UnlockOSThread()
			}
			// else: the goroutine ends locked and the runtime ends the thread.
			done <- r
		}()

		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			home = true
			r.err = fmt.Errorf("enter netns %s: open current netns: %w", path, err)
			return
		}
		defer closeFD(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			home = true // a failed setns leaves the thread where it was
			r.err = fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		defer func() {
			if p := recover(); p != nil {
				r = result{panicked: true, value: p}
			}
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				r.err = errors.Join(r.err, fmt.Errorf("leave netns %s: %w (thread discarded)", path, err))
				return
			}
			home = true
		}()
		r.err = fn()
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// closeFD closes a descriptor that was only read from, where a close error
// cannot mean lost data.
func closeFD(fd int) { _ = unix.Close(fd) }
