package unix

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// ProcessState returns the one-letter state of process pid from
// /proc/PID/stat ('R', 'S', 'D', 'T', 'Z' for a zombie, …).
func ProcessState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if os.IsNotExist(err) {
			return 0, fmt.Errorf("process state of pid %d: %w", pid, ErrNoProcess)
		}
		return 0, fmt.Errorf("process state of pid %d: %w", pid, err)
	}
	return parseState(b)
}

// parseState reads the state field, which follows the last ')' (comm may
// itself hold parentheses and spaces).
func parseState(stat []byte) (byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, fmt.Errorf("parse /proc stat: no state field")
	}
	return stat[i+2], nil
}
