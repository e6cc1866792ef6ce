package fakefc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// A PATCH /drives/{id} with a new path_on_host after InstanceStart swaps
// the drive's backing file on Firecracker: the guest's virtio-blk device
// (/dev/vdX) stays, and reads from then on return the new file's content
// (the device's capacity follows with a config-change interrupt). The
// simulated guest's drives are their backing files bound at /dev/vdX in
// the guest's mount namespace, so the fake does the same to that node:
// the old bind is detached and the new file bound at the same path, read-
// only when the drive is.
//
// What differs from a real guest:
//   - A file already open on /dev/vdX (or a loop device, and so a mount,
//     made from it) keeps the old file; on Firecracker it would see the
//     new content under it. kindling swaps only drives nothing uses (a
//     free slot taking a drive, a drive given back once unmounted), where
//     both behave the same.
//   - No uevent or capacity change is delivered: the next open of the node
//     finds the new file and its size.

// swapSimDrive shows the drive id's new backing file path to the running
// simulated guest, if there is one and the drive is one of its /dev/vdX.
func (m *vm) swapSimDrive(id, path string) error {
	m.mu.Lock()
	g := m.sim
	m.mu.Unlock()
	if g == nil {
		return nil
	}
	return g.swapDrive(id, path)
}

// swapDrive binds path at the guest's device node of drive id in place of
// its former backing file.
func (g *simGuest) swapDrive(id, path string) error {
	var d simDrive
	found := false
	g.mu.Lock()
	for i := range g.drives {
		if g.drives[i].ID == id {
			if abs, err := filepath.Abs(path); err == nil {
				path = abs
			}
			d, found = g.drives[i], true
			d.Path = path
		}
	}
	g.mu.Unlock()
	if !found {
		return nil // the root drive, or a drive the guest does not show
	}
	j := currentJail()
	if j != nil {
		// Jailed, Firecracker opens the new file chrooted, as the jail's
		// uid: so does the fake (this thread is jailed), and the guest is
		// then given the file reached through the jail's root.
		if err := openAsJail(d.Path, d.ReadOnly); err != nil {
			return err
		}
		d.Path = j.hostPath(d.Path)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread's file-system attributes, credentials and mount
		// namespace change for good: it is never unlocked, so it ends
		// with the goroutine.
		runtime.LockOSThread()
		if j != nil {
			if err := j.leaveJail(); err != nil {
				errc <- fmt.Errorf("%w: %w", errSimThread, err)
				return
			}
		}
		errc <- openAndBind(g.pid, d)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("swap the guest's %s to %s: %w", d.Dev, d.Path, err)
	}
	g.mu.Lock()
	for i := range g.drives {
		if g.drives[i].ID == id {
			g.drives[i].Path = d.Path
		}
	}
	g.mu.Unlock()
	g.log.info("fc_api", "Simulated guest: %s now shows %s.", d.Dev, d.Path)
	return nil
}

// openAndBind runs on a locked thread of its own, root on the host: it
// opens the drive's new file as a detached mount tree in the fake's mount
// namespace, then enters the guest's (that of pid) and attaches it at the
// drive's device node there.
func openAndBind(pid int, d simDrive) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, d.Path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open %s as a mount: %w", d.Path, err)
	}
	defer unix.Close(tree)
	if d.ReadOnly {
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("make %s read-only: %w", d.Path, err)
		}
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("open the guest's mount namespace: %w", err)
	}
	defer ns.Close()
	return enterAndBind(int(ns.Fd()), tree, d.Dev)
}

// enterAndBind runs on a locked thread of its own: it enters the mount
// namespace ns (whose root is the guest's /), detaches what is bound at
// dev and attaches the mount tree there.
func enterAndBind(ns, tree int, dev string) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare file-system attributes: %w", err)
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the guest's mount namespace: %w", err)
	}
	// Every bind stacked on the node goes: only the new file shows.
	for {
		if err := unix.Unmount(dev, unix.MNT_DETACH); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break // the bare node: nothing mounted on it
			}
			return fmt.Errorf("detach the old backing: %w", err)
		}
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dev, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the new backing: %w", err)
	}
	return nil
}
