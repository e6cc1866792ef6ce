package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// ErrNotPrivate: a directory kindling keeps state in is a symlink, is not
// owned by the user running kindling, or others may write it; see
// *NotPrivateError. It matches errdefs.ErrInvalid: the fix is the
// caller's (chown/chmod, or another root).
var ErrNotPrivate = errdefs.New(errdefs.ErrInvalid, "not private to the invoking user")

// NotPrivateError says why a directory is not private, and how to fix it.
type NotPrivateError struct {
	What string // "state root", "sandbox directory", ...
	Path string
	// Problem says what is wrong; Fix what to do.
	Problem, Fix string
}

func (e *NotPrivateError) Error() string {
	return fmt.Sprintf("%s %s %s: %s", e.What, e.Path, e.Problem, e.Fix)
}

// Is reports whether target is ErrNotPrivate or errdefs.ErrInvalid.
func (e *NotPrivateError) Is(target error) bool {
	return target == ErrNotPrivate || target == errdefs.ErrInvalid
}

// CheckPrivateDir checks that path is a directory kindling may trust with
// state: not a symlink, owned by the user kindling runs as (its effective
// uid), and writable by nobody else (no group or other write bit). A
// directory anybody else can write lets them swap what kindling reads for
// what they like — as root, that is root. what names the directory in the
// error ("state root", "template store"), which says how to fix it.
//
// Every store of kindling checks its directories with it: the state root
// and the sandbox directories (Open, and every command on a sandbox), the
// template store and templates, the image store.
func CheckPrivateDir(what, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return checkPrivate(what, path, fi)
}

func checkPrivate(what, path string, fi os.FileInfo) error {
	uid := os.Geteuid()
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return &NotPrivateError{What: what, Path: path, Problem: "is a symbolic link",
			Fix: "kindling does not follow links in its state: remove the link, or give the real directory"}
	case !fi.IsDir():
		return &NotPrivateError{What: what, Path: path, Problem: "is not a directory",
			Fix: "remove it, or use another directory"}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &NotPrivateError{What: what, Path: path, Problem: "has no owner kindling can read", Fix: "use another directory"}
	}
	if int(st.Uid) != uid {
		return &NotPrivateError{What: what, Path: path, Problem: fmt.Sprintf("is owned by uid %d, not by you (uid %d)", st.Uid, uid),
			Fix: fmt.Sprintf("chown %d %s if you trust what is in it, or use another directory", uid, path)}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &NotPrivateError{What: what, Path: path, Problem: fmt.Sprintf("can be written by others (mode %04o)", fi.Mode().Perm()),
			Fix: fmt.Sprintf("chmod go-w %s, or use another directory", path)}
	}
	return nil
}

// MkdirPrivate makes the directory path (mode 0700) and checks it: an
// existing one must pass CheckPrivateDir. Missing parents are made too.
func MkdirPrivate(what, path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", what, err)
	}
	return CheckPrivateDir(what, path)
}

// OpenInDir opens the file name in directory dir without following a
// symlink: dir is opened without following one (it must also pass
// CheckPrivateDir, checked on the opened directory itself, so that it
// cannot be swapped in between), and name, a single path element, is
// opened relative to it with O_NOFOLLOW. With os.O_CREATE|os.O_EXCL the
// file must be new. A symlink at either gives an error matching
// ErrNotPrivate.
func OpenInDir(what, dir, name string, flag int, perm os.FileMode) (*os.File, error) {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("open %q in %s: not a file name", name, dir)
	}
	d, err := openPrivateDir(what, dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	fd, err := unix.Openat(int(d.Fd()), name, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	path := filepath.Join(dir, name)
	if errors.Is(err, unix.ELOOP) {
		return nil, &NotPrivateError{What: "file", Path: path, Problem: "is a symbolic link",
			Fix: "kindling does not follow links in its state: remove the link"}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openPrivateDir opens dir (not following a final symlink) and checks the
// opened directory with CheckPrivateDir's rules.
func openPrivateDir(what, dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if fi, lerr := os.Lstat(dir); lerr == nil {
			return nil, checkPrivate(what, dir, fi)
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	d := os.NewFile(uintptr(fd), dir)
	fi, err := d.Stat()
	if err == nil {
		err = checkPrivate(what, dir, fi)
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}
