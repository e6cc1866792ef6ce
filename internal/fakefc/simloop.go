package fakefc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ext4MagicOffset is where an ext2/3/4 superblock's s_magic lies in the
// image: the superblock starts at byte 1024 and s_magic is at 0x38 in it.
const ext4MagicOffset = 1024 + 0x38

// isExt4 reports whether the file at path starts with an ext2/3/4
// superblock (magic 0xEF53, little-endian). Any read error, or a file too
// short to hold a superblock, is "no".
func isExt4(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], ext4MagicOffset); err != nil {
		return false
	}
	return binary.LittleEndian.Uint16(b[:]) == unix.EXT4_SUPER_MAGIC
}

// loopDevice is a loop device bound to an image file with autoclear: it
// detaches itself once the last user (this handle, then the guest's mount)
// lets go, so a killed fake leaves no loop device behind.
type loopDevice struct {
	f    *os.File // the open /dev/loopN
	path string   // /dev/loopN
	num  int
}

// attachLoop binds a free loop device to the image at path, read-only when
// readOnly. name is written as the device's backing-file label (shown by
// losetup), to tell the fake's devices apart.
func attachLoop(path string, readOnly bool, name string) (*loopDevice, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	img, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open loop control: %w", err)
	}
	defer ctl.Close()
	// Another process may take the free device between GET_FREE and
	// CONFIGURE (EBUSY): ask again, a bounded number of times.
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		lp := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(lp, flag|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", lp, err)
		}
		err = configureLoop(dev, img, readOnly, name)
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("bind %s to the image: %w", lp, err)
		}
		return &loopDevice{f: dev, path: lp, num: n}, nil
	}
	return nil, errors.New("find a free loop device: every one was taken by others")
}

// configureLoop binds dev to img with LOOP_CONFIGURE, or with LOOP_SET_FD
// and LOOP_SET_STATUS64 on kernels older than 5.8.
func configureLoop(dev, img *os.File, readOnly bool, name string) error {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	if readOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	copy(info.File_name[:len(info.File_name)-1], name)
	cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: info}
	err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// release closes the fake's handle on the device: from then on only the
// guest's mount holds it, and it detaches when that goes.
func (l *loopDevice) release() {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// bound reports whether the loop device still has a backing file.
func (l *loopDevice) bound() bool {
	_, err := os.Stat(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", l.num))
	return err == nil
}

// waitDetached waits up to timeout for the device to detach, which the
// kernel does once the guest's mount namespace is gone.
func (l *loopDevice) waitDetached(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for l.bound() {
		if time.Now().After(deadline) {
			return fmt.Errorf("loop device %s still bound after %v", l.path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// readAllString reads r to EOF as a string (errors end the read).
func readAllString(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}
