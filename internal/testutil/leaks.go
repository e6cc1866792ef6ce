package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// settleTimeout is how long CheckLeaks waits at cleanup for children to be
// reaped, descriptors closed and goroutines ended before it reports them.
var settleTimeout = 2 * time.Second

// leakEnv is set (through t.Setenv) by CheckLeaks so that the testing
// package refuses to run the test in parallel: the checks look at the whole
// process and only mean something while one test runs alone.
const leakEnv = "KINDLING_CHECK_LEAKS"

// CheckLeaks records, now, the test process's child processes (every process
// whose parent is this one, zombies included), its open file descriptors and
// its goroutine count. At test cleanup it waits up to about two seconds for
// things to settle, then fails the test naming each leaked child (pid, comm
// and state; a live one is then killed, not reaped), each leaked descriptor
// (with its link target) and the goroutine count difference (with a dump).
//
// It also tags, through the environment, the fake Firecrackers the test
// starts (directly or through kindling), and fails the test naming each
// cgroup of a simulated guest of theirs left at cleanup (after up to ten
// seconds, for their janitors); such a cgroup is then removed. Cgroups of
// other test processes' fakes are not counted.
//
// Call it first in the test, so that its cleanup, registered first, runs
// last. The test must not be parallel: CheckLeaks calls t.Setenv, which
// panics in a parallel test.
func CheckLeaks(t testing.TB) {
	t.Helper()
	t.Setenv(leakEnv, t.Name())
	tag := simCgroupTag()
	t.Setenv(envSimCgroupTag, tag)
	primeRuntime()
	before := takeSnapshot(tag)
	t.Cleanup(func() {
		start := time.Now()
		var l leaks
		for {
			l = before.diff(takeSnapshot(tag))
			waited := time.Since(start)
			if l.empty() || waited > simCgroupSettle || (waited > settleTimeout && !l.onlyCgroups()) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if l.empty() {
			return
		}
		t.Errorf("%s", l.report())
		l.killChildren()
		for _, dir := range l.cgroups {
			removeSimCgroup(dir)
		}
	})
}

// primeRuntime makes the Go runtime create the descriptors it keeps for the
// life of the process (the network poller's epoll and eventfd), so that a
// test that happens to be the first to use them is not blamed.
func primeRuntime() {
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	r.Close()
	w.Close()
}

// child is a process whose parent is the test process.
type child struct {
	pid   int
	start uint64 // start time in clock ticks since boot, tells reused PIDs apart
	comm  string
	state string
}

type snapshot struct {
	children   map[int]child
	fds        map[int]string  // descriptor -> readlink target
	goroutines map[int]string  // goroutine ID -> its stack
	cgroups    map[string]bool // simulated guests' cgroups of this process's fakes
}

type leaks struct {
	children   []child
	fds        []int
	fdTargets  map[int]string
	goroutines int      // how many started since and still running
	dump       string   // their stacks
	cgroups    []string // simulated guests' cgroups made since and still there
}

// takeSnapshot records the process's state; tag is the one CheckLeaks
// gives this process's fakes (see simcgroup.go).
func takeSnapshot(tag string) snapshot {
	return snapshot{
		children:   children(),
		fds:        openFDs(),
		goroutines: goroutines(),
		cgroups:    taggedSimCgroups(tag),
	}
}

// goroutines returns every live goroutine's stack, by goroutine ID. Sets
// of IDs, unlike counts, cannot hide a new goroutine behind an old one that
// ended meanwhile.
func goroutines() map[int]string {
	out := map[int]string{}
	for _, stanza := range strings.Split(goroutineDump(), "\n\n") {
		var id int
		if _, err := fmt.Sscanf(stanza, "goroutine %d ", &id); err == nil {
			out[id] = stanza
		}
	}
	return out
}

func (s snapshot) diff(now snapshot) leaks {
	l := leaks{fdTargets: map[int]string{}}
	for pid, c := range now.children {
		if old, ok := s.children[pid]; !ok || old.start != c.start {
			l.children = append(l.children, c)
		}
	}
	sort.Slice(l.children, func(i, j int) bool { return l.children[i].pid < l.children[j].pid })
	for fd, target := range now.fds {
		if old, ok := s.fds[fd]; !ok || old != target {
			l.fds = append(l.fds, fd)
			l.fdTargets[fd] = target
		}
	}
	sort.Ints(l.fds)
	var ids []int
	self := currentGoroutine()
	for id := range now.goroutines {
		if _, ok := s.goroutines[id]; !ok && id != self {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	var dump []string
	for _, id := range ids {
		dump = append(dump, now.goroutines[id])
	}
	l.goroutines, l.dump = len(ids), strings.Join(dump, "\n\n")
	for dir := range now.cgroups {
		if !s.cgroups[dir] {
			l.cgroups = append(l.cgroups, dir)
		}
	}
	sort.Strings(l.cgroups)
	return l
}

func (l leaks) empty() bool {
	return len(l.children) == 0 && len(l.fds) == 0 && l.goroutines == 0 && len(l.cgroups) == 0
}

// onlyCgroups reports whether the leaks are cgroups alone, which CheckLeaks
// waits longer for.
func (l leaks) onlyCgroups() bool {
	return len(l.children) == 0 && len(l.fds) == 0 && l.goroutines == 0
}

func (l leaks) report() string {
	var b strings.Builder
	b.WriteString("leak check:")
	for _, c := range l.children {
		fmt.Fprintf(&b, "\n  leaked child process: pid %d comm %q state %s", c.pid, c.comm, c.state)
	}
	for _, fd := range l.fds {
		fmt.Fprintf(&b, "\n  leaked file descriptor: fd %d -> %s", fd, l.fdTargets[fd])
	}
	for _, dir := range l.cgroups {
		fmt.Fprintf(&b, "\n  leaked cgroup of a simulated guest of the test's fake Firecracker: %s (populated %s)", dir, cgroupPopulated(dir))
	}
	if l.goroutines > 0 {
		fmt.Fprintf(&b, "\n  leaked goroutines: %d started during the test and still running:\n%s", l.goroutines, l.dump)
	}
	return b.String()
}

// killChildren kills leaked children that still run, so that they do not
// outlive the test binary. It checks each one's start time first, so a
// recycled PID is never signalled. Zombies are left for their owner to reap.
func (l leaks) killChildren() {
	for _, c := range l.children {
		if c.state == "Z" {
			continue
		}
		if now, ok := readChild(c.pid); ok && now.start == c.start {
			_ = syscall.Kill(c.pid, syscall.SIGKILL)
		}
	}
}

// children lists this process's children from /proc.
func children() map[int]child {
	self := os.Getpid()
	out := map[int]child{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if c, ok := readChildOf(pid, self); ok {
			out[pid] = c
		}
	}
	return out
}

func readChild(pid int) (child, bool) {
	return readChildOf(pid, os.Getpid())
}

// readChildOf returns process pid if its parent is ppid.
func readChildOf(pid, ppid int) (child, bool) {
	st, err := kunix.ReadStat(pid)
	if err != nil || st.PPid != ppid {
		return child{}, false
	}
	return child{pid: pid, start: st.StartTime, comm: st.Comm, state: string(st.State)}, true
}

// openFDs lists this process's open descriptors and their targets. The
// descriptor ReadDir itself used is closed by the time it is read back, so
// its readlink fails and it is left out.
func openFDs() map[int]string {
	out := map[int]string{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		out[fd] = target
	}
	return out
}

// currentGoroutine returns the ID of the calling goroutine: the one that
// runs the check is not a leak, whichever goroutine runs cleanups.
func currentGoroutine() int {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	var id int
	fmt.Sscanf(string(buf), "goroutine %d ", &id)
	return id
}

func goroutineDump() string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}
