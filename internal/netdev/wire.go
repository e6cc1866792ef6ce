package netdev

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// AttachTap attaches to the tap device name in the network namespace
// netns (a name or path; "" for the current one) as Firecracker's
// virtio-net does, and returns the descriptor frames are read from and
// written to: one Ethernet frame per read or write, no packet-information
// prefix, no virtio-net header. If no device of that name exists a
// non-persistent tap is created, which lives as long as the file: a
// simulated guest's own interface. The file is non-blocking (reads and
// writes wait in Go's poller), so Close ends a pending Read.
func AttachTap(name, netns string) (*os.File, error) {
	if err := ValidateTapName(name); err != nil {
		return nil, fmt.Errorf("attach tap: %w", err)
	}
	nsPath, err := resolveOptionalNetNS(netns)
	if err != nil {
		return nil, fmt.Errorf("attach tap %q: %w", name, err)
	}
	var f *os.File
	err = Do(nsPath, func() error {
		fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", tunDevice, err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			closeFD(fd)
			return err
		}
		// The flags of the last attacher win for a persistent tap, so a
		// tap made with IFF_VNET_HDR is read here without the header.
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			closeFD(fd)
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("TUNSETIFF: %w", ErrBusy)
			}
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		f = os.NewFile(uintptr(fd), "tap "+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attach tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	return f, nil
}

// Wire copies Ethernet frames both ways between two attached taps (see
// AttachTap) — what Firecracker does between a guest's virtio-net device
// and its tap — until Close. A simulated guest is given a network this way:
// its own tap in its namespace, wired to the sandbox's tap.
type Wire struct {
	a, b *os.File
	wg   sync.WaitGroup
	once sync.Once
}

// NewWire starts copying between a and b; the Wire owns both files.
func NewWire(a, b *os.File) *Wire {
	w := &Wire{a: a, b: b}
	for _, dir := range [][2]*os.File{{a, b}, {b, a}} {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			buf := make([]byte, 65536)
			for {
				n, err := dir[0].Read(buf)
				if err != nil {
					return
				}
				// A frame the other side cannot take (its device is down,
				// its queue full) is dropped, as a NIC drops it.
				_, _ = dir[1].Write(buf[:n])
			}
		}()
	}
	return w
}

// Close stops the copying and closes both files (a non-persistent tap
// goes with its file). It is idempotent.
func (w *Wire) Close() error {
	var err error
	w.once.Do(func() {
		err = errors.Join(w.a.Close(), w.b.Close())
		w.wg.Wait()
	})
	return err
}
