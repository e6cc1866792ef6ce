package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// DefaultLockDir is where Host.LockDir points when it is empty.
const DefaultLockDir = "/run/kindling/network"

// Host is the namespace where the host side of sandbox networking lives:
// slot veths' host ends, CNI bridges, published-port and egress tables. The
// zero value is the caller's own namespace, which is what a runtime wants;
// tests point NetNS at a namespace of their own so nothing on the real
// host changes.
type Host struct {
	// NetNS is a network namespace name or path; "" is the caller's.
	NetNS string
	// LockDir holds the lock file that serialises port publishing between
	// processes; "" is DefaultLockDir.
	LockDir string
}

// do runs fn on a thread inside the host namespace.
func (h Host) do(fn func() error) error { return netdev.Do(h.NetNS, fn) }

// inNS runs fn on a thread inside nsPath ("" for the caller's namespace).
func inNS(nsPath string, fn func() error) error { return netdev.Do(nsPath, fn) }

// openNS opens a namespace by name or path ("" for the calling thread's)
// and returns its descriptor.
func openNS(nameOrPath string) (int, error) {
	path := "/proc/thread-self/ns/net"
	if nameOrPath != "" {
		var err error
		if path, err = netdev.ResolveNetNS(nameOrPath); err != nil {
			return -1, err
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open netns %s: %w", path, err)
	}
	return fd, nil
}

// nftIn returns a lasting nf_tables connection whose socket lives in
// nameOrPath ("" for the caller's namespace). Close it with closeNft.
func nftIn(nameOrPath string) (*nftables.Conn, error) {
	if nameOrPath == "" {
		return nftables.New(nftables.AsLasting())
	}
	fd, err := openNS(nameOrPath)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// A lasting connection dials now, in fd's namespace; fd can go after.
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables in %s: %w", nameOrPath, err)
	}
	return c, nil
}

// closeNft closes a connection made by nftIn.
func closeNft(c *nftables.Conn) { _ = c.CloseLasting() }

// netlinkIn returns a route netlink handle in nameOrPath ("" for the
// caller's namespace).
func netlinkIn(nameOrPath string) (*netlink.Handle, error) {
	if nameOrPath == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	fd, err := openNS(nameOrPath)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
}

// setSysctl writes value to /proc/sys/<key> (key with '/' separators)
// from a thread inside nsPath, where per-namespace keys (net.*) take effect.
func setSysctl(nsPath, key, value string) error {
	return inNS(nsPath, func() error {
		p := filepath.Join("/proc/sys", key)
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// lockDir returns the directory of the lock file.
func (h Host) lockDir() string {
	if h.LockDir == "" {
		return DefaultLockDir
	}
	return h.LockDir
}

// lock takes an exclusive flock on name in LockDir and returns the unlock
// function. It waits for other holders until ctx ends.
func (h Host) lock(ctx context.Context, name string) (func(), error) {
	dir := h.lockDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}
