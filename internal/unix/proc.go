package unix

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoProcess is returned when a process (or thread) does not exist.
var ErrNoProcess = errors.New("no such process")

// procRoot is where procfs is mounted; tests never change it.
const procRoot = "/proc"

// ProcessStartTime returns the start time of process pid, in clock ticks
// since boot (field 22 of /proc/PID/stat). Paired with a PID it names one
// process for good: a recycled PID has another start time.
func ProcessStartTime(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("process start time of pid %d: %w", pid, ErrNoProcess)
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("process start time of pid %d: %w", pid, ErrNoProcess)
		}
		return 0, fmt.Errorf("process start time of pid %d: %w", pid, err)
	}
	st, err := parseStartTime(b)
	if err != nil {
		return 0, fmt.Errorf("process start time of pid %d: %w", pid, err)
	}
	return st, nil
}

// parseStartTime extracts field 22 (starttime) from the contents of a
// /proc/PID/stat file. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last
// ")" in the line.
func parseStartTime(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || bytes.IndexByte(stat, '(') < 0 {
		return 0, errors.New("malformed stat line: no command name")
	}
	// After ")" come fields 3, 4, ...; starttime is field 22, the 20th.
	fields := strings.Fields(string(stat[i+1:]))
	const idx = 22 - 3
	if len(fields) <= idx {
		return 0, fmt.Errorf("malformed stat line: %d fields after the command name", len(fields))
	}
	v, err := strconv.ParseUint(fields[idx], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed stat line: starttime %q: %w", fields[idx], err)
	}
	return v, nil
}

// ThreadNames returns the name (comm) of every thread of process pid, by
// thread ID. Threads that exit while the directory is read are left out.
func ThreadNames(pid int) (map[int]string, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("thread names of pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("thread names of pid %d: %w", pid, err)
	}
	names := make(map[int]string, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "comm"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, errESRCH) {
				continue // the thread exited meanwhile
			}
			return nil, fmt.Errorf("thread names of pid %d: %w", pid, err)
		}
		names[tid] = strings.TrimSuffix(string(b), "\n")
	}
	return names, nil
}
