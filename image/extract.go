package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// extractor writes a flattened image's tar stream (mutate.Extract's) into a
// staging directory, never outside it: every path is resolved by os.Root,
// which refuses ".." and symbolic links (absolute ones, or relative ones
// leading out) that would leave the directory, and the last element of a
// path is created with *at calls on its parent that do not follow links.
type extractor struct {
	root *os.Root
	dir  string // the staging directory, root's path
	// times are the modification times the tar stream gives, by clean
	// relative path; everything else gets epoch (see setTimes).
	times map[string]time.Time
	// links are the hard links, made once every other entry is written:
	// mutate.Extract emits upper layers first, so a link may come before
	// its target.
	links []*tar.Header
	st    buildStats
	// parent caches the open parent directory of the last entry.
	parent     *os.File
	parentName string
}

// buildStats count what the staging tree holds, for sizing the ext4.
type buildStats struct {
	Entries       int   // files, directories, links, devices
	Bytes         int64 // bytes of regular files' data
	Blocks        int64 // 4 KiB blocks those files and directories need
	XattrsSkipped int   // extended attributes the staging file system refused
}

func newExtractor(dir string) (*extractor, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &extractor{root: r, dir: dir, times: map[string]time.Time{}}, nil
}

func (x *extractor) close() {
	if x.parent != nil {
		x.parent.Close()
		x.parent = nil
	}
	x.root.Close()
}

// escapeError is an entry whose path does not resolve inside the root
// filesystem.
type escapeError struct {
	name string
	err  error
}

func (e *escapeError) Error() string {
	return fmt.Sprintf("layer entry %q cannot be written inside the root filesystem (%v)", e.name, e.err)
}

func (e *escapeError) Unwrap() error { return e.err }

// cleanName turns a tar entry name into a path relative to the root: "."
// for the root itself.
func cleanName(n string) (string, error) {
	n = path.Clean("/" + strings.TrimLeft(n, "/"))
	if n == "/" {
		return ".", nil
	}
	n = n[1:]
	if !filepath.IsLocal(n) {
		return "", &escapeError{name: n, err: errors.New("not a local path")}
	}
	return n, nil
}

// openParent returns the open directory that holds name, creating missing
// directories (root-owned, 0755, as a layer that omits them implies).
func (x *extractor) openParent(name string) (*os.File, error) {
	dir := path.Dir(name)
	if x.parent != nil && x.parentName == dir {
		return x.parent, nil
	}
	if x.parent != nil {
		x.parent.Close()
		x.parent = nil
	}
	if dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return nil, x.pathErr(name, err)
		}
	}
	f, err := x.root.Open(dir)
	if err != nil {
		return nil, x.pathErr(name, err)
	}
	x.parent, x.parentName = f, dir
	return f, nil
}

// pathErr classifies an error of os.Root resolving name. Everything
// written so far came from the image through this extractor, so a path
// that does not resolve inside the root (it escapes through ".." or a
// symbolic link, absolute or relative, or loops) is the image's doing: an
// escapeError. A full disk stays what it is.
func (x *extractor) pathErr(name string, err error) error {
	if diskFull(err) || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &escapeError{name: name, err: err}
}

// entry writes one tar entry; r reads its data.
func (x *extractor) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeLink {
		x.links = append(x.links, hdr)
		x.st.Entries++
		x.times[name] = hdr.ModTime
		return nil
	}
	base := path.Base(name)
	if name == "." {
		base = "."
	}
	pf, err := x.openParent(name)
	if err != nil {
		return err
	}
	fd := int(pf.Fd())
	mode := uint32(hdr.Mode) & 0o7777
	// mutate.Extract emits the upper layers first: whatever is at a path
	// already came from above and wins, except that a directory made for
	// the entries below it takes the metadata of its own entry.
	var st unix.Stat_t
	exists := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	isDir := exists && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if exists && (hdr.Typeflag != tar.TypeDir || !isDir) {
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !exists {
			if err := unix.Mkdirat(fd, base, 0o700); err != nil {
				return fmt.Errorf("make directory %q: %w", name, err)
			}
		}
		x.st.Blocks++
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		if err := x.writeFile(fd, base, name, hdr.Size, r); err != nil {
			return err
		}
		x.st.Bytes += hdr.Size
		x.st.Blocks += (hdr.Size + 4095) / 4096
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, fd, base); err != nil {
			return fmt.Errorf("make symbolic link %q: %w", name, err)
		}
		if len(hdr.Linkname) > 59 { // longer targets take a block
			x.st.Blocks++
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknodat(fd, base, kind|0o600, dev); err != nil {
			return fmt.Errorf("make device node %q: %w", name, err)
		}
	default:
		return nil // PAX globals, GNU long names (handled by archive/tar), ...
	}
	x.st.Entries++
	if err := unix.Fchownat(fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set owner of %q: %w", name, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// After chown, which clears set-user-ID and set-group-ID bits.
		if err := unix.Fchmodat(fd, base, mode, 0); err != nil {
			return fmt.Errorf("set mode of %q: %w", name, err)
		}
	}
	if err := x.setXattrs(fd, base, name, hdr); err != nil {
		return err
	}
	x.times[name] = hdr.ModTime
	return nil
}

// writeFile creates regular file base in directory fd with size bytes of
// r, never following a link at that name.
func (x *extractor) writeFile(fd int, base, name string, size int64, r io.Reader) error {
	nfd, err := unix.Openat(fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %q: %w", name, err)
	}
	f := os.NewFile(uintptr(nfd), name)
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return fmt.Errorf("write %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	return nil
}

// setXattrs sets the entry's extended attributes (PAX SCHILY.xattr.*
// records). Attributes the staging file system does not support are
// skipped and counted.
func (x *extractor) setXattrs(fd int, base, name string, hdr *tar.Header) error {
	const prefix = "SCHILY.xattr."
	// In a fixed order: mke2fs copies them in the order the staging file
	// system lists them, which is the order they were set in.
	for _, k := range slices.Sorted(maps.Keys(hdr.PAXRecords)) {
		v := hdr.PAXRecords[k]
		attr, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		// The parent is reached through its descriptor; the entry itself
		// is not followed (lsetxattr).
		p := fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
		err := unix.Lsetxattr(p, attr, []byte(v), 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) && hdr.Typeflag == tar.TypeSymlink:
			x.st.XattrsSkipped++
		default:
			return fmt.Errorf("set extended attribute %s of %q: %w", attr, name, err)
		}
	}
	return nil
}

// finishLinks makes the hard links, now that their targets exist.
func (x *extractor) finishLinks() error {
	for _, hdr := range x.links {
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return err
		}
		if _, err := x.root.Lstat(target); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return errorf(ErrInvalid, "hard link %q names %q, which is not in the image (a later layer removed it?)", name, hdr.Linkname)
			}
			return x.pathErr(target, err)
		}
		if _, err := x.openParent(name); err != nil {
			return err
		}
		err = x.root.Link(target, name)
		if errors.Is(err, fs.ErrExist) {
			continue // an upper layer's entry is there
		}
		if err != nil {
			return fmt.Errorf("make hard link %q: %w", name, x.pathErr(name, err))
		}
	}
	return nil
}

// setTimes gives every file in the staging tree its modification time
// from the image (those the image does not name, such as directories it
// implied, get epoch) and epoch as access time, so that nothing of the
// build's own clock reaches the ext4.
func setTimes(dir string, times map[string]time.Time, epoch time.Time) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		mt, ok := times[rel]
		if !ok {
			mt = epoch
			if d.IsDir() {
				// Implied by a path below it: as a layer without the entry
				// means (whatever the umask).
				if err := os.Chmod(p, 0o755); err != nil {
					return err
				}
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(epoch.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %q: %w", rel, err)
		}
		return nil
	})
}
