package container

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// unpack reads a tar stream on stdin into dir (which must not exist),
// keeping owners, modes, times, links, devices and FIFOs. Every path is
// resolved inside dir (os.Root: no "..", no symbolic link leading out).
func unpack(dir string) error {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("unpack: directory %q: want a clean absolute path other than /", dir)
	}
	if err := os.MkdirAll(path.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	tr := tar.NewReader(os.Stdin)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("unpack: read tar: %w", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			if err := os.Chmod(dir, os.FileMode(h.Mode)&os.ModePerm); err != nil {
				return err
			}
			os.Lchown(dir, h.Uid, h.Gid)
			continue
		}
		if err := unpackEntry(root, dir, name, h, tr); err != nil {
			return fmt.Errorf("unpack %s: %w", name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{name, h.ModTime})
		}
	}
	// Directory times last: their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		root.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime)
	}
	return nil
}

func unpackEntry(root *os.Root, dir, name string, h *tar.Header, r io.Reader) error {
	mode := os.FileMode(h.Mode) & os.ModePerm
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, mode); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	case tar.TypeReg:
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		return root.Symlink(h.Linkname, name) // owner and times of a link: left
	case tar.TypeLink:
		target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
		return root.Link(target, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		// The parent is resolved inside the root; the node is made by name
		// in it.
		parent, err := root.OpenRoot(path.Dir(name))
		if err != nil {
			return err
		}
		defer parent.Close()
		pf, err := parent.Open(".")
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := unix.Mknodat(int(pf.Fd()), path.Base(name), kind|uint32(mode), int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))); err != nil {
			return err
		}
	default:
		return nil // other kinds (PAX globals, ...) carry no file
	}
	if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
		return err
	}
	// Chown clears set-id bits: the mode again.
	if h.Typeflag != tar.TypeSymlink {
		if err := root.Chmod(name, os.FileMode(h.Mode)&os.ModePerm|setIDBits(h.Mode)); err != nil {
			return err
		}
	}
	return root.Chtimes(name, h.ModTime, h.ModTime)
}

func setIDBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
