package container

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture kindling runs on.
const userHZ = 100

// printStats writes the Stats of container id as JSON to stdout.
func printStats(id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	pid, err := readPID(id)
	if err != nil {
		return fmt.Errorf("container %s is not running: %w", id, err)
	}
	st, err := containerStats("/proc", pid)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	return json.NewEncoder(os.Stdout).Encode(st)
}

// containerStats sums the figures of the processes in the PID namespace of
// process pid (a container's init), read from the proc file system at proc.
func containerStats(proc string, pid int) (Stats, error) {
	var st Stats
	ns, err := os.Readlink(filepath.Join(proc, strconv.Itoa(pid), "ns/pid"))
	if err != nil {
		return st, fmt.Errorf("not running: %w", err)
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return st, err
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		if l, err := os.Readlink(filepath.Join(dir, "ns/pid")); err != nil || l != ns {
			continue
		}
		// A process that ends while it is read is skipped.
		if err := addProcess(&st, dir); err == nil {
			st.Pids++
		}
	}
	st.LimitBytes, _ = memTotal(filepath.Join(proc, "meminfo"))
	return st, nil
}

// addProcess adds one process's CPU times, faults and resident memory.
func addProcess(st *Stats, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return err
	}
	// The fields after the command, which is in parentheses and may hold
	// anything: state is field 3, minflt 10, majflt 12, utime 14, stime
	// 15, cutime 16, cstime 17.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return fmt.Errorf("%s/stat: no command", dir)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return fmt.Errorf("%s/stat: %d fields", dir, len(f))
	}
	n := func(field int) uint64 { v, _ := strconv.ParseUint(f[field-3], 10, 64); return v }
	var mem Stats
	s, err := os.Open(filepath.Join(dir, "status"))
	if err != nil {
		return err
	}
	defer s.Close()
	sc := bufio.NewScanner(s)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "RssAnon":
			dst = &mem.AnonBytes
		case "RssFile":
			dst = &mem.FileBytes
		case "RssShmem":
			dst = &mem.ShmemBytes
		default:
			continue
		}
		kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		*dst = kb << 10
	}
	st.UserUsec += (n(14) + n(16)) * 1e6 / userHZ
	st.SystemUsec += (n(15) + n(17)) * 1e6 / userHZ
	st.PageFaults += n(10) + n(12)
	st.MajorFaults += n(12)
	st.AnonBytes += mem.AnonBytes
	st.FileBytes += mem.FileBytes
	st.ShmemBytes += mem.ShmemBytes
	return nil
}

// memTotal reads MemTotal from a meminfo file, in bytes.
func memTotal(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal", p)
}
