package unix

import (
	"os"

	"golang.org/x/sys/unix"
)

// CloneFile makes dst share src's blocks (a reflink, FICLONE) where the
// filesystem can; an error says it cannot, and the caller copies instead.
func CloneFile(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}
