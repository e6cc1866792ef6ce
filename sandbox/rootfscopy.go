package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// RootfsCopyFile is the name, in a sandbox's copy directory (copyDir), of
// the root filesystem copy made by CreateOptions.CopyRootfs.
const RootfsCopyFile = "rootfs.ext4"

// createWithRootfsCopy records rec as st.Create does, and while the new
// sandbox is still locked has copy make its own root filesystem from
// rec.Spec.Rootfs (which was checked as the root drive) in its copy
// directory, then records the copy as the root drive. On error nothing is
// left.
func (r *Runtime) createWithRootfsCopy(ctx context.Context, rec *record, copy func(ctx context.Context, src, dst string) error) error {
	if rec.Spec.Rootfs == nil {
		return fmt.Errorf("%w: a root filesystem copy needs a root filesystem to copy", ErrInvalidSpec)
	}
	l, err := r.st.CreateLocked(ctx, rec.ID, rec)
	if err != nil {
		return err
	}
	defer l.Unlock()
	dir, err := copyDir(l, rec)
	if err == nil {
		dst := filepath.Join(dir, RootfsCopyFile)
		err = copy(ctx, rec.Spec.Rootfs.Path, dst)
		if err == nil {
			rec.Spec.Rootfs = &Disk{Path: dst}
			err = l.Save(rec)
		}
	}
	if err != nil {
		return errors.Join(err, removeCopyDir(l.Dir(), rec), l.Remove())
	}
	return nil
}

// The copy directory. A jailed VMM gets a writable drive by a hard link
// into its chroot, so the drive must be on the chroot base's filesystem.
// The sandbox's own copies of drives (a run IMAGE root filesystem, a
// template builder's, a clone's) are made in its directory, unless it is
// jailed and its state root is on another filesystem than the chroot base
// (the default /run/kindling is a tmpfs on most hosts): then they are made
// in a directory of its own on that filesystem, <chroot base>/<root
// tag>.disks/<id>, which lives as long as the sandbox (it is its disk:
// stop and start keep it) and is recorded (record.CopyDir) so that its
// removal never guesses. It is a sibling of the root's chroot base, not in
// it: every directory there is taken for a Firecracker's jails, whose
// <id> directory goes at every end of the VMM. The caller's own files are
// never moved: a writable drive of theirs on another filesystem is refused
// with the fix (vmm's check).

// jailCopiesDir is the directory holding the copy directories of the
// jailed sandboxes of the state root root.
func jailCopiesDir(root string) string {
	return filepath.Join(jailChrootBase, jailRootTag(root)+".disks")
}

// jailSharedDir is where the jailed sandboxes of root share one copy of
// each read-only file their uids cannot read, such as a template's guest
// memory (vmm.JailerConfig.SharedDir): on the chroot base's filesystem.
func jailSharedDir(root string) string {
	return filepath.Join(jailChrootBase, jailRootTag(root)+".shared")
}

// copyDir is the directory in which the sandbox rec, locked as l, gets its
// own copies of drives: its directory, or, jailed with its state root on
// another filesystem than the chroot base, a copy directory of its own,
// made and recorded (saved) here.
func copyDir(l *store.Locked, rec *record) (string, error) {
	dir := l.Dir()
	if rec.Spec.Jailer == "" {
		return dir, nil
	}
	same, err := onChrootBaseFS(dir, filepath.Join(jailChrootBase, jailRootTag(filepath.Dir(dir))))
	if err != nil || same {
		return dir, err
	}
	cd := filepath.Join(jailCopiesDir(filepath.Dir(dir)), filepath.Base(dir))
	if err := os.MkdirAll(jailChrootBase, 0o755); err != nil {
		return "", fmt.Errorf("make the drive copy directory: %w", err)
	}
	if err := os.Mkdir(filepath.Dir(cd), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("make the drive copy directory: %w", err)
	}
	// A directory at its place is what an earlier sandbox of this ID
	// failed to remove: the new sandbox, locked, is the only one of its
	// ID now.
	if err := os.RemoveAll(cd); err != nil {
		return "", fmt.Errorf("make the drive copy directory: %w", err)
	}
	// Recorded before anything is in it, so that a crash leaves nothing
	// that rm and gc would not find.
	rec.CopyDir = cd
	if err := l.Save(rec); err != nil {
		rec.CopyDir = ""
		return "", err
	}
	if err := os.Mkdir(cd, 0o700); err != nil {
		return "", fmt.Errorf("make the drive copy directory: %w", err)
	}
	return cd, nil
}

// onChrootBaseFS reports whether dir is on the filesystem of the chroot
// base base (or of its nearest existing ancestor: the jailer makes it).
func onChrootBaseFS(dir, base string) (bool, error) {
	var st, bst syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	for {
		err := syscall.Stat(base, &bst)
		if err == nil {
			return st.Dev == bst.Dev, nil
		}
		if base == "/" {
			return false, fmt.Errorf("stat %s: %w", base, err)
		}
		base = filepath.Dir(base)
	}
}

// removeCopyDir removes the copy directory of the sandbox in dir being
// removed: when its record rec says it has one, or, with rec nil (the
// record is lost), if there is one. It is only ever the directory at the
// sandbox's place: a record never chooses what is removed.
func removeCopyDir(dir string, rec *record) error {
	if rec != nil && rec.CopyDir == "" {
		return nil
	}
	place := filepath.Join(jailCopiesDir(filepath.Dir(dir)), filepath.Base(dir))
	if err := os.RemoveAll(place); err != nil {
		return fmt.Errorf("remove the drive copies: %w", err)
	}
	return nil
}

// markCopied marks read-only, in the configuration cfg that is only
// checked, the drives whose files are copied (newRecord): the VMM gets
// the sandbox's copies, made where a jailed VMM can have them (copyDir).
func markCopied(cfg *vmm.Config, copied []string) {
	for _, p := range copied {
		if err := absPath(&p); err != nil {
			continue
		}
		for i := range cfg.Drives {
			if cfg.Drives[i].Path == p {
				cfg.Drives[i].ReadOnly = true
			}
		}
	}
}

// removeCleanedCopyDir removes the copy directory, if any, of the
// sandbox whose directory p gc removed for want of a state file (p is
// one of the paths the store's clean removed), while no sandbox of its ID
// is there again.
func (r *Runtime) removeCleanedCopyDir(p string) error {
	if filepath.Dir(p) != filepath.Clean(r.st.Root()) || store.ValidateID(filepath.Base(p)) != nil {
		return nil
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	err := removeCopyDir(p, nil)
	removeEmptyJailParents(filepath.Dir(p))
	return err
}
