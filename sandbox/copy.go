package sandbox

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// copyFileSparse copies src to a new file dst, skipping holes where the
// file system reports them (SEEK_DATA/SEEK_HOLE); the data is copied by
// copy_file_range, which clones extents on file systems that can.
func copyFileSparse(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	size := fi.Size()
	const seekData, seekHole = 3, 4
	for off := int64(0); off < size; {
		start, err := in.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			// No hole reporting: copy everything.
			if _, err := in.Seek(0, io.SeekStart); err != nil {
				return err
			}
			if _, err := out.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err = io.Copy(out, in)
			return err
		}
		end, err := in.Seek(start, seekHole)
		if err != nil {
			return err
		}
		if _, err := in.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, end-start); err != nil {
			return err
		}
		off = end
	}
	return out.Truncate(size)
}
