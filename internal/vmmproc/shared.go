package vmmproc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Shared copies: a read-only file that a jail's uid cannot read (a
// template's guest memory, a root-owned image) is copied once into a
// directory on the chroot base's filesystem and hard-linked into each jail
// that needs it, with an ACL entry giving each jail's uid read access,
// instead of a copy per jail. Each copy is named by its source's identity
// (device, inode, size, modification time), so a changed source gets a
// new one, and a file beside it (<copy>.src) names its source. A jail's
// end revokes its uid's entries; a copy no jail links is kept while its
// source is there unchanged (the next clone of a template links it
// instead of copying again), removed once the source is gone or changed,
// and every copy no jail links is removed by PurgeShared (the state
// root's last sandbox gone). Every step runs under a flock on the
// directory, which keeps the ACL's read-modify-write and the link count's
// check whole across the processes (starters, monitors) that share it.

// sharedName is the file name of the shared copy of a source with stat st.
func sharedName(st *syscall.Stat_t) string {
	return fmt.Sprintf("%x-%x-%x-%x.%09d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
}

// lockShared opens and flocks the shared directory dir, made (mode 0700)
// when create is set, and checks that it is still at its path once locked
// (a jail's end may remove it when empty): the caller unlocks by closing.
func lockShared(dir string, create bool) (*os.File, error) {
	for range 5 {
		if create {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
		}
		d, err := os.Open(dir)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
			d.Close()
			return nil, err
		}
		held, err1 := d.Stat()
		now, err2 := os.Lstat(dir)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return d, nil
		}
		d.Close()
		if !create {
			return nil, fs.ErrNotExist
		}
	}
	return nil, fmt.Errorf("lock %s: removed under us repeatedly", dir)
}

// StageShared puts the read-only file src at dst (a path in a jail) for
// uid: a hard link to src's shared copy in dir (made now if there is none),
// with an ACL entry giving uid read access. It returns the shared copy's
// path; the jail's end calls ReleaseShared. dir must be on dst's
// filesystem. On error nothing of it is left at dst.
func StageShared(dir, src, dst string, uid int) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", src)
	}
	d, err := lockShared(dir, true)
	if err != nil {
		return "", fmt.Errorf("shared copies in %s: %w", dir, err)
	}
	defer d.Close()
	shared := filepath.Join(dir, sharedName(st))
	if _, err := os.Lstat(shared); errors.Is(err, fs.ErrNotExist) {
		abs, err := filepath.Abs(src)
		if err == nil {
			err = os.WriteFile(shared+sourceSuffix, []byte(abs), 0o600)
		}
		if err == nil {
			err = copyPrivate(src, shared)
		}
		if err != nil {
			os.Remove(shared + sourceSuffix)
			return "", fmt.Errorf("copy %s to %s: %w", src, dir, err)
		}
	} else if err != nil {
		return "", err
	}
	if err := os.Link(shared, dst); err != nil {
		removeStale(shared)
		return "", err
	}
	if err := kunix.GrantUserACL(shared, uid, kunix.ACLRead); err != nil {
		os.Remove(dst)
		removeStale(shared)
		return "", fmt.Errorf("give uid %d read access to %s: %w", uid, shared, err)
	}
	return shared, nil
}

// sourceSuffix ends the name of the file that names a shared copy's source.
const sourceSuffix = ".src"

// ReleaseShared revokes uid's ACL entries from the shared copies in dir
// and removes the copies no jail links whose source is gone or changed
// (and what a copy cut off left). Call it once uid's jail is removed: a
// jail's uid is its own, so every entry of it there is that jail's. uid 0
// only collects. A directory that is gone is fine.
func ReleaseShared(dir string, uid int) error {
	return sweepShared(dir, uid, removeStale)
}

// PurgeShared removes every shared copy in dir that no jail links, source
// there or not: for the state root's last sandbox's end, after which
// nothing of the root's jails is kept.
func PurgeShared(dir string) error {
	return sweepShared(dir, 0, removeUnlinked)
}

// sweepShared revokes uid's entries (unless 0) from every copy in dir and
// calls drop on each, under the directory's lock.
func sweepShared(dir string, uid int, drop func(string)) error {
	d, err := lockShared(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release the shared copies in %s: %w", dir, err)
	}
	defer d.Close()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("release the shared copies in %s: %w", dir, err)
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".tmp"):
			os.Remove(p)
			continue
		case strings.HasSuffix(e.Name(), sourceSuffix):
			if _, err := os.Lstat(strings.TrimSuffix(p, sourceSuffix)); errors.Is(err, fs.ErrNotExist) {
				os.Remove(p)
			}
			continue
		}
		if uid != 0 {
			errs = append(errs, kunix.RevokeUserACL(p, uid))
		}
		drop(p)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release the shared copies in %s: %w", dir, err)
	}
	return nil
}

// removeUnlinked removes the shared copy path, and the file naming its
// source, when its only link is its name in the shared directory. The
// caller holds the directory's lock.
func removeUnlinked(path string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 1 {
		os.Remove(path)
		os.Remove(path + sourceSuffix)
	}
}

// removeStale is removeUnlinked for a copy whose source is gone or no
// longer the file it was copied from (another identity).
func removeStale(path string) {
	if b, err := os.ReadFile(path + sourceSuffix); err == nil {
		if fi, err := os.Stat(string(b)); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && sharedName(st) == filepath.Base(path) {
				return
			}
		}
	}
	removeUnlinked(path)
}

// copyPrivate copies src to the new file dst, mode 0600, through a
// temporary file renamed into place (reflinked where the filesystem can).
func copyPrivate(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	os.Remove(tmp) // left by a copy cut off; the caller holds the lock
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if kunix.CloneFile(out, in) != nil {
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
