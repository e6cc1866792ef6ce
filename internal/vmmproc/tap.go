package vmmproc

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DeleteTap deletes the persistent tap device name in the network
// namespace netns ("" for the current one) without netlink: it attaches to
// the tap, clears its persistence and lets go, which removes it. A tap that
// does not exist is not an error; a device of that name that is not a
// single-queue tap is refused by the kernel (EINVAL) and left alone. The
// tap must not be in use (its VMM has exited).
func DeleteTap(name, netns string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("delete tap %q: not a device name", name)
	}
	err := InNetNS(netns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w (not a single-queue tap device)", err)
			}
			return err
		}
		// A tap that did not exist was made just now, not persistent: the
		// close removes it too.
		return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0)
	})
	if err != nil {
		return fmt.Errorf("delete tap %q: %w", name, err)
	}
	return nil
}
