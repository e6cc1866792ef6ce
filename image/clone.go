package image

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// How Clone made a copy (CloneMethod's answer).
const (
	CloneReflink = "reflink" // FICLONE: the copy shares the base's extents
	CloneSparse  = "sparse"  // the data extents copied, holes left as holes
)

// Clone makes dst (a new file, mode 0600) a writable copy of the root
// filesystem base, for one sandbox, without writing the base. Where the
// file system can (btrfs, XFS, bcachefs) the copy is a reflink: it shares
// the base's blocks until either is written, and costs nothing. Elsewhere
// (ext4, tmpfs) only the data extents are copied (SEEK_DATA/SEEK_HOLE,
// copy_file_range), so the copy takes what the base's data takes, not its
// size. On error dst is removed.
func Clone(base, dst string) error {
	_, err := clone(base, dst)
	return err
}

// CloneMethod is Clone, also saying how the copy was made: CloneReflink
// or CloneSparse (for a benchmark or a log to report).
func CloneMethod(base, dst string) (string, error) { return clone(base, dst) }

func clone(base, dst string) (how string, err error) {
	in, err := os.Open(base)
	if err != nil {
		return "", fmt.Errorf("clone root filesystem: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("clone root filesystem: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("clone root filesystem: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("clone root filesystem: %w", cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return CloneReflink, nil
	} else if !reflinkUnsupported(err) {
		return "", fmt.Errorf("clone root filesystem %s: %w", base, err)
	}
	if err := copySparse(in, out, fi.Size()); err != nil {
		return "", fmt.Errorf("clone root filesystem %s: %w", base, err)
	}
	return CloneSparse, nil
}

// reflinkUnsupported reports whether FICLONE failed because the file
// system (or the pair of them) cannot share extents.
func reflinkUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

// copySparse copies the data extents of in (size bytes) into out at the
// same offsets and sets out's size, leaving holes where in has them. Where
// SEEK_DATA is not supported everything is copied.
func copySparse(in, out *os.File, size int64) error {
	ifd := int(in.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return copyAll(in, out, size)
		}
		end, err := unix.Seek(ifd, start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if err := copyRange(in, out, start, end-start); err != nil {
			return err
		}
		off = end
	}
	return out.Truncate(size)
}

// copyRange copies n bytes at off of in to the same offset of out, with
// copy_file_range where it works, else read and write.
func copyRange(in, out *os.File, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				_, err := io.Copy(io.NewOffsetWriter(out, woff), io.NewSectionReader(in, roff, n))
				return err
			}
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= int64(c)
	}
	return nil
}

// copyAll copies the whole of in into out.
func copyAll(in, out *os.File, size int64) error {
	_, err := io.Copy(io.NewOffsetWriter(out, 0), io.NewSectionReader(in, 0, size))
	if err != nil {
		return err
	}
	return out.Truncate(size)
}
