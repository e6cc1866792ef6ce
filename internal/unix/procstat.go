package unix

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// ProcessStartAndState returns process pid's start time (as
// ProcessStartTime) and state (as ProcessState) from one read of
// /proc/PID/stat: what a liveness check needs, at half the reads.
func ProcessStartAndState(pid int) (uint64, byte, error) {
	if pid <= 0 {
		return 0, 0, fmt.Errorf("process stat of pid %d: %w", pid, ErrNoProcess)
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, 0, fmt.Errorf("process stat of pid %d: %w", pid, ErrNoProcess)
		}
		return 0, 0, fmt.Errorf("process stat of pid %d: %w", pid, err)
	}
	st, err := parseStartTime(b)
	if err != nil {
		return 0, 0, fmt.Errorf("process stat of pid %d: %w", pid, err)
	}
	state, err := parseState(b)
	if err != nil {
		return 0, 0, fmt.Errorf("process stat of pid %d: %w", pid, err)
	}
	return st, state, nil
}
