package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// The simulated guests' cgroups. The fake Firecracker makes one cgroup per
// simulated guest, <cgroup2 mount>/kindling-sim/<name>, and a janitor
// process removes it once the fake is gone. When the environment holds
// envSimCgroupTag, the fake ends the name with -t<tag>: CheckLeaks sets it
// to a tag of this test process, so that it can tell the cgroups of the
// fakes its test started (directly, or through kindling's monitor, which
// passes KINDLING_* variables on) from those of the other test processes
// running on the host at the same time.

// envSimCgroupTag is fakefc.EnvCgroupTag (fakefc is not imported here: the
// fake's package has no business in every test binary).
const envSimCgroupTag = "KINDLING_SIM_CGROUP_TAG"

// simCgroupSettle is how long CheckLeaks waits at cleanup for the
// simulated guests' cgroups of the test's fakes to be removed: their
// janitors may still be ending the guests' processes.
var simCgroupSettle = 10 * time.Second

// simCgroupTag is the tag of this test process's fakes: its PID and start
// time, which no other process on the host shares, then or later. "" when
// the start time cannot be read.
func simCgroupTag() string {
	start, err := kunix.ProcessStartTime(os.Getpid())
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d_%d", os.Getpid(), start)
}

// taggedSimCgroups returns the simulated guests' cgroups whose names end
// with the tag: those of fakes started with envSimCgroupTag=tag. None when
// tag is "".
func taggedSimCgroups(tag string) map[string]bool {
	out := map[string]bool{}
	if tag == "" {
		return out
	}
	for _, mnt := range cgroup2Mounts() {
		m, _ := filepath.Glob(filepath.Join(mnt, "kindling-sim", "*-t"+tag))
		for _, p := range m {
			out[p] = true
		}
	}
	return out
}

// cgroup2Mounts returns the mount points of the cgroup v2 hierarchy in
// this process's mount namespace (on a hybrid host, the unified one).
func cgroup2Mounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && !seen[f[4]] {
			seen[f[4]] = true
			out = append(out, f[4])
		}
	}
	return out
}

// cgroupPopulated returns the "populated" value of the cgroup dir's
// cgroup.events ("0", "1"), or "?" when it cannot be read.
func cgroupPopulated(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v
		}
	}
	return "?"
}

// removeSimCgroup kills what is left in a leaked cgroup (the guest of a
// fake this test started), waits a moment for it to end, and removes the
// cgroup, so that it does not outlive the test. Errors are ignored: the
// leak is reported already.
func removeSimCgroup(dir string) {
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(2 * time.Second)
	for cgroupPopulated(dir) == "1" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	_ = os.Remove(dir)
}
