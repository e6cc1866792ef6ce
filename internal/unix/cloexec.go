package unix

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// MarkInheritedCloseOnExec marks every file descriptor from 3 up close-on-
// exec, so that descriptors this process inherited (a shell's 7>&1, a
// pipe's other end) do not leak into the processes it starts: those get
// exactly the descriptors they are given. Descriptors opened by Go are
// close-on-exec already. It uses close_range(2) where the kernel has
// CLOSE_RANGE_CLOEXEC (Linux 5.11), else walks /proc/self/fd.
func MarkInheritedCloseOnExec() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		unix.CloseOnExec(fd) // the directory's own descriptor may be gone: no error to act on
	}
	return nil
}
