package container

import (
	"os"
	"path/filepath"
	"testing"
)

// containerStats sums the processes of the init's PID namespace only, in
// the units of a cgroup (microseconds, bytes).
func TestContainerStats(t *testing.T) {
	proc := t.TempDir()
	procs := []struct {
		pid, ns, stat, status string
	}{
		// utime 150, stime 50, cutime 10, cstime 0 ticks; 7 minor, 2 major faults.
		{"1", "pid:[100]", "1 (app) S 0 1 1 0 -1 0 7 0 2 0 150 50 10 0 20 0 1 0", "Name:\tapp\nRssAnon:\t  1024 kB\nRssFile:\t   512 kB\nRssShmem:\t     0 kB\n"},
		// A command with spaces and a parenthesis.
		{"7", "pid:[100]", "7 (a b) c) S 1 1 1 0 -1 0 1 0 0 0 50 50 0 0 20 0 1 0", "RssAnon:\t  2048 kB\nRssFile:\t   0 kB\nRssShmem:\t     4 kB\n"},
		// Another container's process.
		{"9", "pid:[200]", "9 (other) S 0 1 1 0 -1 0 1 0 0 0 999 999 0 0 20 0 1 0", "RssAnon:\t  9999 kB\n"},
	}
	for _, p := range procs {
		dir := filepath.Join(proc, p.pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p.ns, filepath.Join(dir, "ns/pid")); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "stat"), []byte(p.stat), 0o644)
		os.WriteFile(filepath.Join(dir, "status"), []byte(p.status), 0o644)
	}
	os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal:         524288 kB\nMemFree:  1 kB\n"), 0o644)
	os.MkdirAll(filepath.Join(proc, "self"), 0o755)

	st, err := containerStats(proc, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Pids: 2, UserUsec: (150 + 10 + 50) * 10000, SystemUsec: (50 + 50) * 10000,
		AnonBytes: 3072 << 10, FileBytes: 512 << 10, ShmemBytes: 4 << 10, LimitBytes: 512 << 20,
		PageFaults: 7 + 2 + 1, MajorFaults: 2}
	if st != want {
		t.Errorf("stats = %+v\nwant    %+v", st, want)
	}
	if _, err := containerStats(proc, 42); err == nil {
		t.Error("stats of a process that is not there: no error")
	}
}
