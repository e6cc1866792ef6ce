package unix

import (
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

// parseState reads the state field, the first after the command name.
func parseState(stat []byte) (byte, error) {
	_, fields, err := statFields(stat)
	if err != nil || len(fields) == 0 || len(fields[0]) != 1 {
		return 0, fmt.Errorf("parse /proc stat: no state field")
	}
	return fields[0][0], nil
}
