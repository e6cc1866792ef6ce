package unix

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// SetArg overwrites argument i of this process's command line, as
// /proc/self/cmdline and ps show it, with s, in place: the argument's
// memory is not moved, so s must not be longer than the argument it
// replaces, and the bytes it leaves are filled with NULs (ps shows them
// as trailing blanks). A process started ahead of knowing what it will
// serve gives its argument room (padding) and names its work later.
//
// The Go runtime's os.Args strings share that memory: os.Args[i] sees the
// new bytes too, padding included.
func SetArg(i int, s string) error {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return fmt.Errorf("set argument %d: %w", i, err)
	}
	_, fields, err := statFields(stat)
	if err != nil {
		return fmt.Errorf("set argument %d: %w", i, err)
	}
	// arg_start and arg_end are fields 48 and 49 (Linux ≥ 3.5).
	const startIdx = 48 - 3
	if len(fields) <= startIdx+1 {
		return fmt.Errorf("set argument %d: the stat line has no arg_start (kernel older than 3.5)", i)
	}
	start, err1 := strconv.ParseUint(fields[startIdx], 10, 64)
	end, err2 := strconv.ParseUint(fields[startIdx+1], 10, 64)
	if err := errors.Join(err1, err2); err != nil || end < start {
		return fmt.Errorf("set argument %d: malformed arg_start/arg_end in /proc/self/stat", i)
	}
	cmdline, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return fmt.Errorf("set argument %d: %w", i, err)
	}
	if uint64(len(cmdline)) != end-start {
		return fmt.Errorf("set argument %d: the command line was changed already", i)
	}
	args := bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0})
	if i < 0 || i >= len(args) {
		return fmt.Errorf("set argument %d: the command line has %d arguments", i, len(args))
	}
	off := 0
	for _, a := range args[:i] {
		off += len(a) + 1
	}
	room := len(args[i])
	if len(s) > room || bytes.IndexByte([]byte(s), 0) >= 0 {
		return fmt.Errorf("set argument %d: %q does not fit in its %d bytes", i, s, room)
	}
	b := make([]byte, room)
	copy(b, s)
	mem, err := os.OpenFile("/proc/self/mem", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("set argument %d: %w", i, err)
	}
	defer mem.Close()
	if _, err := mem.WriteAt(b, int64(start)+int64(off)); err != nil {
		return fmt.Errorf("set argument %d: %w", i, err)
	}
	return nil
}
