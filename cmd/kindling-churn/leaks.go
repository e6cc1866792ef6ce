package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// netnsDirs are where `ip netns` (and netdev) keep named network namespaces.
var netnsDirs = []string{"/run/netns", "/var/run/netns"}

// hostSnapshot is what the host looks like, as far as the leak checks care.
type hostSnapshot struct {
	fds        map[int]string // this process's descriptors -> link targets
	goroutines int
	zombies    map[int]uint64  // zombie PID -> start time, host-wide
	netns      map[string]bool // named network namespaces
}

// takeHostSnapshot records the baseline the leak checks compare against.
func takeHostSnapshot() hostSnapshot {
	return hostSnapshot{
		fds:        openFDs(),
		goroutines: runtime.NumGoroutine(),
		zombies:    zombies(),
		netns:      namedNetNS(),
	}
}

// leakCheck says what a churn run must have left as it found it. Its
// checks look only at this run's things (its children, its state root, its
// sandboxes' taps), so that other runs and tests on the host at the same
// time are not taken for its leaks.
type leakCheck struct {
	root string // the state root
	// taps are the tap names the run's sandboxes owned.
	taps []string
	// net, with --net slot or cni, adds the network package's audit.
	net *netEnv
}

// findLeaks compares the host now with base, waiting up to settle for
// processes to be reaped and descriptors and goroutines to end, and
// returns one line per leak.
func (c leakCheck) findLeaks(base hostSnapshot, settle time.Duration) []string {
	deadline := time.Now().Add(settle)
	for {
		leaks := c.leaksNow(base)
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c leakCheck) leaksNow(base hostSnapshot) []string {
	var leaks []string
	leaks = append(leaks, c.processLeaks(base)...)
	leaks = append(leaks, fdLeaks(base)...)
	if d := runtime.NumGoroutine() - base.goroutines; d > 0 {
		leaks = append(leaks, fmt.Sprintf("goroutines: %d more than before the cycles", d))
	}
	leaks = append(leaks, c.rootLeaks()...)
	leaks = append(leaks, c.jailLeaks()...)
	leaks = append(leaks, c.netLeaks(base)...)
	if c.net != nil {
		leaks = append(leaks, c.net.leaks(base)...)
	}
	return leaks
}

// processLeaks finds processes that outlived their sandboxes: any process
// whose command line, environment or working directory names the state
// root, any child of this process (the cycles end with none), and any new
// zombie left unreaped by this process or by one of the run's (a monitor
// that does not reap its VMM). Zombies handed to init when their parent
// exited are init's to reap.
func (c leakCheck) processLeaks(base hostSnapshot) []string {
	var leaks []string
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []string{fmt.Sprintf("processes: cannot read /proc: %v", err)}
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		desc := fmt.Sprintf("pid %d (%s, state %c)", pid, st.comm, st.state)
		switch {
		case st.state == 'Z' || st.state == 'X':
			if old, seen := base.zombies[pid]; seen && old == st.start {
				continue // a zombie from before the run
			}
			if st.ppid == self {
				leaks = append(leaks, "zombie process: "+desc)
			} else if where := c.mentionsRoot(st.ppid); where != "" {
				leaks = append(leaks, fmt.Sprintf("zombie process: %s, not reaped by its parent pid %d, whose %s names the state root", desc, st.ppid, where))
			}
		case st.ppid == self:
			leaks = append(leaks, "child process still running: "+desc)
		default:
			if where := c.mentionsRoot(pid); where != "" {
				leaks = append(leaks, fmt.Sprintf("process still running: %s: its %s names the state root", desc, where))
			}
		}
	}
	return leaks
}

// mentionsRoot returns which of pid's command line, environment or working
// directory names the state root, or "".
func (c leakCheck) mentionsRoot(pid int) string {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	root := []byte(c.root)
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && bytes.Contains(b, root) {
		return "command line"
	}
	if b, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil && bytes.Contains(b, root) {
		return "environment"
	}
	if cwd, err := os.Readlink(filepath.Join(dir, "cwd")); err == nil && (cwd == c.root || strings.HasPrefix(cwd, c.root+"/")) {
		return "working directory"
	}
	return ""
}

// fdLeaks finds descriptors of this process that were not open before.
func fdLeaks(base hostSnapshot) []string {
	var leaks []string
	now := openFDs()
	fds := make([]int, 0, len(now))
	for fd := range now {
		fds = append(fds, fd)
	}
	sort.Ints(fds)
	for _, fd := range fds {
		if old, ok := base.fds[fd]; !ok || old != now[fd] {
			leaks = append(leaks, fmt.Sprintf("file descriptor: fd %d -> %s", fd, now[fd]))
		}
	}
	return leaks
}

// rootLeaks finds what the sandboxes left under the state root: anything but
// the root's own hidden directories, any socket anywhere, any lock file,
// and any socket still bound to a path under the root.
func (c leakCheck) rootLeaks() []string {
	var leaks []string
	ents, err := os.ReadDir(c.root)
	if err != nil {
		return []string{fmt.Sprintf("state root: %v", err)}
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			leaks = append(leaks, "state root holds "+filepath.Join(c.root, e.Name()))
		}
	}
	_ = filepath.WalkDir(c.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			leaks = append(leaks, fmt.Sprintf("state root: %v", err))
			return nil
		}
		if d.Type()&fs.ModeSocket != 0 {
			leaks = append(leaks, "socket file left: "+path)
		}
		if filepath.Base(filepath.Dir(path)) == ".locks" && !d.IsDir() {
			leaks = append(leaks, "lock file left: "+path)
		}
		return nil
	})
	for _, p := range boundSockets(c.root) {
		leaks = append(leaks, "socket still bound: "+p)
	}
	return leaks
}

// netLeaks finds the sandboxes' taps that still exist, in this network
// namespace or in a named one that appeared during the run, and new named
// namespaces named after the run's sandboxes.
func (c leakCheck) netLeaks(base hostSnapshot) []string {
	var leaks []string
	namespaces := []string{""}
	for ns := range namedNetNS() {
		if !base.netns[ns] {
			namespaces = append(namespaces, ns)
			if strings.Contains(filepath.Base(ns), "churn-") {
				leaks = append(leaks, "new network namespace left: "+ns)
			}
		}
	}
	for _, ns := range namespaces {
		where := ""
		if ns != "" {
			where = " in network namespace " + ns
		}
		for _, name := range c.taps {
			ok, err := netdev.TapExists(name, ns)
			switch {
			case err != nil && !errors.Is(err, netdev.ErrNotTap):
				if ns == "" || !errors.Is(err, netdev.ErrNotFound) { // a namespace may go meanwhile
					leaks = append(leaks, fmt.Sprintf("tap %s%s: %v", name, where, err))
				}
			case ok || err != nil:
				leaks = append(leaks, "tap still there: "+name+where)
			}
		}
	}
	sort.Strings(leaks)
	return leaks
}

// procStat is what readStat parses from /proc/PID/stat.
type procStat struct {
	comm  string
	state byte
	ppid  int
	start uint64
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (procStat, bool) {
	st, err := kunix.ReadStat(pid)
	if err != nil {
		return procStat{}, false
	}
	return procStat{comm: st.Comm, state: st.State, ppid: st.PPid, start: st.StartTime}, true
}

// zombies lists the host's zombie processes.
func zombies() map[int]uint64 {
	out := map[int]uint64{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok && (st.state == 'Z' || st.state == 'X') {
			out[pid] = st.start
		}
	}
	return out
}

// openFDs lists this process's descriptors and their link targets. The one
// ReadDir used is closed by the time it is read back, so it is left out.
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
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			out[fd] = target
		}
	}
	return out
}

// namedNetNS lists the named network namespaces.
func namedNetNS() map[string]bool {
	out := map[string]bool{}
	for _, dir := range netnsDirs {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			out[filepath.Join(dir, e.Name())] = true
		}
	}
	return out
}

// boundSockets lists the Unix sockets, of any process, bound to a path
// under root (from /proc/thread-self/net/unix, whose last column is the
// path). It reads the calling thread's view: /proc/net is the main
// thread's, which may be stuck in another network namespace after a
// locked goroutine left it there.
func boundSockets(root string) []string {
	f, err := os.Open("/proc/thread-self/net/unix")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		if p := fields[len(fields)-1]; strings.HasPrefix(p, root+"/") {
			out = append(out, p)
		}
	}
	return out
}
