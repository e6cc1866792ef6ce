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
// /proc/PID/stat file.
func parseStartTime(stat []byte) (uint64, error) {
	_, fields, err := statFields(stat)
	if err != nil {
		return 0, err
	}
	// After ")" come fields 3, 4, ...; starttime is field 22, the 20th.
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

// statFields splits a /proc/PID/stat line into the command name (field 2)
// and the fields after it (3, 4, …). The command name is in parentheses and
// may itself hold spaces and parentheses, so fields are counted from the
// last ")" in the line.
func statFields(stat []byte) (comm string, fields []string, err error) {
	open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return "", nil, errors.New("malformed stat line: no command name")
	}
	return string(stat[open+1 : end]), strings.Fields(string(stat[end+1:])), nil
}

// Stat is what kindling reads of a process's /proc/PID/stat.
type Stat struct {
	Comm      string // the command name (field 2)
	State     byte   // 'R', 'S', 'D', 'T', 'Z' for a zombie, … (field 3)
	PPid      int    // the parent's PID (field 4)
	StartTime uint64 // clock ticks since boot (field 22)
}

// ReadStat reads process pid's /proc/PID/stat. A process that does not
// exist gives an error matching ErrNoProcess.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if errors.Is(err, os.ErrNotExist) {
		return Stat{}, fmt.Errorf("stat of pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: %w", pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: %w", pid, err)
	}
	return st, nil
}

func parseStat(b []byte) (Stat, error) {
	comm, fields, err := statFields(b)
	if err != nil {
		return Stat{}, err
	}
	start, err := parseStartTime(b)
	if err != nil {
		return Stat{}, err
	}
	if len(fields[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed stat line: state %q", fields[0])
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat line: ppid %q: %w", fields[1], err)
	}
	return Stat{Comm: comm, State: fields[0][0], PPid: ppid, StartTime: start}, nil
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
