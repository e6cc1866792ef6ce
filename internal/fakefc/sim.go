package fakefc

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// The contract with the guest agent: the fake shows the guest one extra
// kernel parameter, and the agent, seeing it, listens on Unix sockets
// <simVsockDir>/<port> instead of AF_VSOCK ports.
const (
	simVsockDir   = "/run/kindling-vsock"
	simVsockParam = "kindling.vsock=unix:" + simVsockDir
)

// defaultInit is the init a kernel runs when the command line names none.
const defaultInit = "/sbin/init"

// simTimeout bounds each wait of the simulated guest's life: the stage's
// report, a freeze, the loop device's detach, the cgroup's emptying.
const simTimeout = 5 * time.Second

// simPlan is what a simulated boot needs, read from the VM's configuration.
type simPlan struct {
	image    string // the root drive's backing file
	readOnly bool
	init     string
	args     []string
	cmdline  string // the command line the guest sees
	hostname string
	drives   []simDrive // the other drives
	sigstop  bool       // pause with SIGSTOP even where a cgroup freezer works
	uds      string     // the vsock's host socket: guest connections go to <uds>_<port>
	nics     []simNIC   // the network interfaces, eth0 first
}

// simDrive is a drive other than the root, shown in the guest as its
// backing file bound at the device path a guest kernel would give it.
type simDrive struct {
	ID       string `json:"-"`    // the drive's drive_id
	Path     string `json:"path"` // absolute path on the host
	Dev      string `json:"dev"`  // e.g. /dev/vdb
	ReadOnly bool   `json:"read_only"`
	// Tree is, in the stage process, the descriptor of the backing file
	// as a detached mount the fake made (see driveTrees).
	Tree int `json:"tree,omitempty"`
}

// simPlan reports whether the VM boots as a simulated guest (a vsock
// device, and a root drive whose file is an ext2/3/4 image) and how; m.mu
// is held.
func (m *vm) simPlan() (simPlan, bool) {
	if m.vsock == nil || m.boot == nil {
		return simPlan{}, false
	}
	var root object
	for _, d := range m.drives {
		if flag(d, "is_root_device") {
			root = d
		}
	}
	if root == nil {
		// No is_root_device (kindling puts root= on the command line
		// instead): the kernel's root=/dev/vdX is the X-th drive added.
		root = rootFromCmdline(str(m.boot, "boot_args"), m.drives)
	}
	p := str(root, "path_on_host")
	if root == nil || p == "" || !isExt4(p) {
		return simPlan{}, false
	}
	var drives []simDrive
	// The root drive is vda; the others follow in the order they were
	// added, as Firecracker attaches them.
	for _, d := range m.drives {
		hp := str(d, "path_on_host")
		if sameObject(d, root) || hp == "" || len(drives) >= 25 {
			continue
		}
		if abs, err := filepath.Abs(hp); err == nil {
			hp = abs
		}
		drives = append(drives, simDrive{ID: str(d, "drive_id"), Path: hp, Dev: "/dev/vd" + string(rune('b'+len(drives))), ReadOnly: flag(d, "is_read_only")})
	}
	args := str(m.boot, "boot_args")
	plan := simPlan{image: p, readOnly: flag(root, "is_read_only"), init: defaultInit, hostname: m.id, drives: drives, nics: m.simNICs()}
	plan.cmdline = strings.TrimSpace(args + " " + simVsockParam)
	kernel, initArgs, _ := strings.Cut(" "+args+" ", " -- ")
	for _, f := range strings.Fields(kernel) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "init":
			plan.init = v
		case "ip":
			// ip=<client>:<server>:<gw>:<netmask>:<hostname>:...: the kernel
			// sets the hostname from the fifth field.
			if parts := strings.Split(v, ":"); len(parts) > 4 && parts[4] != "" {
				plan.hostname = parts[4]
			}
		}
	}
	if a := strings.Fields(initArgs); len(a) > 0 {
		plan.args = a
	}
	return plan, true
}

// simGuest is a running simulated guest: its init process (PID 1 of its
// own PID namespace), the loop device of its root, and the cgroup that
// freezes it.
type simGuest struct {
	log     *logger
	cmd     *exec.Cmd
	pid     int // init's PID as the host sees it
	loop    *loopDevice
	cg      *simCgroup // nil: pause stops the processes with SIGSTOP
	janitor *exec.Cmd  // removes cg if the fake dies; nil without cg
	janW    *os.File   // the fake's end of the janitor's pipe
	hostLn  net.Listener
	wires   []*netdev.Wire // the network interfaces' frame copiers
	done    chan struct{}

	mu       sync.Mutex    // guards the fields below
	paused   bool          // frozen by PATCH /vm
	running  chan struct{} // closed while the guest runs, replaced on pause
	stopping bool          // the fake is ending the guest itself: no power-off exit
	drives   []simDrive    // the drives shown at /dev/vdX, as last swapped
}

// stageError is a line the stage process reports: its root is ready
// (Ready), or it cannot exec init.
type stageError struct {
	Ready  bool   `json:"ready,omitempty"`
	Msg    string `json:"msg,omitempty"`
	NoInit bool   `json:"no_init,omitempty"`
}

// simThread runs the functions sent to it on one OS thread that never
// exits: PR_SET_PDEATHSIG fires when the thread that forked the child ends,
// so the guest's init must be forked by a thread that lives as long as the
// process.
var simThread = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked
		simThreadTID.Store(int32(unix.Gettid()))
		for f := range ch {
			f()
		}
	}()
	return ch
})

// simThreadTID is simThread's thread ID once it runs.
var simThreadTID atomic.Int32

// onSimThread runs f on simThread and waits for it; called on simThread,
// it runs f at once.
func onSimThread(f func()) {
	if tid := simThreadTID.Load(); tid != 0 && int(tid) == unix.Gettid() {
		f()
		return
	}
	done := make(chan struct{})
	simThread() <- func() { f(); close(done) }
	<-done
}

// bootSim starts a simulated guest as plan says, with console as its
// serial console. onPowerOff runs (once the guest is cleaned up) when init
// ends on its own. An image without the init program gives an error
// matching errNoInit, and nothing is left behind.
func bootSim(plan simPlan, id string, console io.Writer, log *logger, onPowerOff func()) (g *simGuest, err error) {
	if e := onSim(func() { g, err = bootSimHere(plan, id, console, log, onPowerOff) }); e != nil {
		return nil, e
	}
	return g, err
}

// bootSimHere is bootSim on the thread the simulated guest's work runs on.
func bootSimHere(plan simPlan, id string, console io.Writer, log *logger, onPowerOff func()) (*simGuest, error) {
	if euid := os.Geteuid(); euid != 0 {
		return nil, fmt.Errorf("booting the ext4 root filesystem %s as a simulated guest needs root (running as uid %d)", plan.image, euid)
	}
	name, err := simCgroupName(id)
	if err != nil {
		return nil, err
	}
	g := &simGuest{log: log, done: make(chan struct{}), running: make(chan struct{})}
	close(g.running)
	loop, err := attachLoop(plan.image, plan.readOnly, "kindling-sim:"+id)
	if err != nil {
		return nil, fmt.Errorf("root drive %s: %w", plan.image, err)
	}
	g.loop = loop
	g.drives = append([]simDrive(nil), plan.drives...)
	if plan.sigstop {
		log.info("fc_api", "Simulated guest: pause will stop its processes with SIGSTOP, as FAKEFC asks.")
	} else if err := g.startCgroup(name); err != nil {
		log.warn("fc_api", "Simulated guest: no cgroup freezer (%v); pause will stop its processes with SIGSTOP.", err)
	} else {
		log.info("fc_api", "Simulated guest: cgroup %s freezes it.", g.cg.dir)
	}
	if err := g.startInit(plan, console); err != nil {
		g.cleanup()
		return nil, err
	}
	go g.watch(onPowerOff)
	return g, nil
}

// simHostSocket is the socket, in the guest's vsock directory, that guest
// programs connect to for a connection to the host (the AF_VSOCK connect
// to CID 2 of a real guest).
const simHostSocket = "host"

// listenHost binds the guest's host socket. A guest program connects to it
// and sends "CONNECT <port>\n"; the fake connects to <uds>_<port> on the
// host, as Firecracker does for a guest-initiated connection, answers
// "OK <n>\n" and copies both ways, or closes the connection when nothing
// listens there.
func (g *simGuest) listenHost(uds string) error {
	ln, err := net.Listen("unix", fmt.Sprintf("/proc/%d/root%s/%s", g.pid, simVsockDir, simHostSocket))
	if err != nil {
		return err
	}
	g.hostLn = ln
	go func() {
		var local uint32 = firstLocalPort
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			local++
			go bridgeToHost(c, uds, local)
		}
	}()
	return nil
}

// bridgeToHost handles one guest-initiated connection c.
func bridgeToHost(c net.Conn, uds string, local uint32) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	port, ok := parseConnect(line)
	if !ok {
		return
	}
	hc, err := net.DialTimeout("unix", fmt.Sprintf("%s_%d", uds, port), simTimeout)
	if err != nil {
		return
	}
	defer hc.Close()
	if _, err := fmt.Fprintf(c, "OK %d\n", local); err != nil {
		return
	}
	splice(c, r, hc)
}

// EnvCgroupTag names the environment variable whose value, when set, the
// fake adds to the names of its simulated guests' cgroups, so that a test
// can tell the cgroups of its own fakes from those of other tests running
// on the same host (testutil.CheckLeaks sets it). It starts with KINDLING_
// so that kindling's monitor passes it on to Firecracker.
const EnvCgroupTag = "KINDLING_SIM_CGROUP_TAG"

// maxCgroupTag bounds the tag's length in a cgroup name.
const maxCgroupTag = 40

// simCgroupName is the name of the cgroup of the simulated guest of VM id
// run by this process: <id>-<pid>-<start time>, then -t<tag> when
// $KINDLING_SIM_CGROUP_TAG is set. The process's start time (in clock
// ticks since boot, field 22 of /proc/<pid>/stat) tells it apart from an
// earlier process that had the same PID, so that no two fakes, now or
// hours apart, share or mistake each other's cgroup.
func simCgroupName(id string) (string, error) {
	start, err := kunix.ProcessStartTime(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("name the simulated guest's cgroup: %w", err)
	}
	name := fmt.Sprintf("%s-%d-%d", cgroupSafe(id), os.Getpid(), start)
	if tag := cgroupTag(os.Getenv(EnvCgroupTag)); tag != "" {
		name += "-t" + tag
	}
	return name, nil
}

// cgroupTag keeps the letters, digits and underscores of tag, at most
// maxCgroupTag of them.
func cgroupTag(tag string) string {
	tag = strings.Map(func(r rune) rune {
		if r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return -1
	}, tag)
	if len(tag) > maxCgroupTag {
		tag = tag[:maxCgroupTag]
	}
	return tag
}

// simCgroupNameRE matches the end of a name made by simCgroupName: the
// creator's PID and start time, and the tag.
var simCgroupNameRE = regexp.MustCompile(`-([0-9]+)-([0-9]+)(?:-t[0-9A-Za-z_]+)?$`)

// simCgroupCreator returns the PID and start time of the fake that made
// the cgroup name; ok is false for a name simCgroupName did not make.
func simCgroupCreator(name string) (pid int, start uint64, ok bool) {
	m := simCgroupNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(m[1])
	start, err2 := strconv.ParseUint(m[2], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return 0, 0, false
	}
	return pid, start, true
}

// cgroupSafe keeps the characters of id that are safe in a directory name.
func cgroupSafe(id string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, id)
}

// startCgroup makes the guest's cgroup name, after its janitor: however
// the fake ends once the cgroup exists, a janitor is there to remove it.
// Cgroups that earlier fakes left are swept first (sweepSimCgroups).
func (g *simGuest) startCgroup(name string) error {
	dir, err := simCgroupDir(name)
	if err != nil {
		return err
	}
	sweepSimCgroups(filepath.Dir(dir))
	// Without a janitor a killed fake would leave the cgroup.
	if err := g.startJanitor(dir); err != nil {
		return fmt.Errorf("start the cgroup janitor: %w", err)
	}
	cg, err := newSimCgroup(dir)
	if err != nil {
		g.stopJanitor()
		return err
	}
	g.cg = cg
	return nil
}

// startJanitor spawns the janitor, which removes the cgroup dir once the
// fake's end of its pipe closes, so that even a SIGKILL of the fake
// leaves no cgroup behind.
//
// The janitor outlives the fake, and must not be taken for one of the
// sandbox's processes then: those are found, by kindling and by the
// tests' leak checks, by a working directory, an argument or an
// environment value naming the sandbox's directory or state root, and
// killed; a janitor killed before it is done leaves the cgroup. So it
// works in / and gets no environment (it needs none).
func (g *simGuest) startJanitor(dir string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", janitorArg, dir)
	cmd.Dir = "/"
	cmd.Env = []string{}
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	g.janitor, g.janW = cmd, w
	if j := currentJail(); j != nil {
		if err := j.leaveVMMCgroups(cmd.Process.Pid); err != nil {
			g.log.warn("fc_api", "Simulated guest: cgroup janitor: %v", err)
		}
	}
	return nil
}

// stopJanitor lets the janitor go (it removes the cgroup, if still there)
// and waits for it to exit.
func (g *simGuest) stopJanitor() {
	if g.janitor == nil {
		return
	}
	g.janW.Close()
	_ = g.janitor.Wait()
	g.janitor, g.janW = nil, nil
}

// dropCgroup gives up the cgroup freezer, for the reason err: pause then
// stops the guest's processes with SIGSTOP.
func (g *simGuest) dropCgroup(err error) {
	g.log.warn("fc_api", "Simulated guest: cannot start in cgroup %s (%v); pause will stop its processes with SIGSTOP.", g.cg.dir, err)
	if err := g.cg.destroy(simTimeout); err != nil {
		g.log.warn("fc_api", "Simulated guest: %v", err)
	}
	g.cg = nil
	g.stopJanitor()
}

// startInit spawns the stage process in new namespaces, sends it its
// configuration and waits until it has exec'd init or failed.
func (g *simGuest) startInit(plan simPlan, console io.Writer) error {
	cfg := stageConfig{
		Loop: g.loop.path, ReadOnly: plan.readOnly, Hostname: plan.hostname, Cmdline: plan.cmdline,
		Init: plan.init, Args: plan.args, Env: []string{"HOME=/", "TERM=linux"},
		Scratch: os.TempDir(), VsockDir: simVsockDir, Drives: append([]simDrive(nil), plan.drives...),
	}
	trees, err := driveTrees(cfg.Drives)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range trees {
			t.Close()
		}
	}()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer errR.Close()
	// Always through a pipe (exec.Cmd copies it to console): a guest
	// program that opens /dev/console (a link to init's stdout) then gets
	// the pipe, never a file it would write from offset 0.
	cw := consoleWriter{console}
	start := func(inCgroup bool) (*exec.Cmd, error) {
		cmd := exec.Command("/proc/self/exe", stageArg)
		cmd.Env = []string{}
		cmd.Stdout, cmd.Stderr = cw, cw
		cmd.ExtraFiles = append([]*os.File{cfgR, errW}, trees...)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
			Setsid:     true,
		}
		if inCgroup {
			// The stage starts inside the cgroup (clone3's
			// CLONE_INTO_CGROUP), so all of the guest is in it from the
			// first instruction.
			dir, err := os.Open(g.cg.dir)
			if err != nil {
				return nil, err
			}
			defer dir.Close()
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(dir.Fd())
		}
		var err error
		onSimThread(func() { err = cmd.Start() })
		return cmd, err
	}
	cmd, err := start(g.cg != nil)
	if err != nil && g.cg != nil {
		g.dropCgroup(err)
		cmd, err = start(false)
	}
	errW.Close()
	if err != nil {
		return fmt.Errorf("start the guest's stage process: %w", err)
	}
	g.cmd, g.pid = cmd, cmd.Process.Pid
	if j := currentJail(); j != nil {
		// Before the stage has its configuration: it forks nothing yet.
		if err := j.leaveVMMCgroups(g.pid); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("the guest's stage process: %w", err)
		}
	}
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("configure the guest's stage process: %w", err)
	}
	// The stage reports one JSON line when its root is ready (then waits
	// for the configuration pipe to close before it execs init), or an
	// error; EOF after "ready" means init runs.
	lines := make(chan string, 4) // at most ready, an error and EOF
	go func() {
		r := bufio.NewReader(errR)
		for {
			line, err := r.ReadString('\n')
			lines <- line
			if err != nil {
				return
			}
		}
	}()
	timeout := time.After(simTimeout)
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-timeout:
			return fmt.Sprintf(`{"msg":"the stage process did not exec init within %v"}`, simTimeout)
		}
	}
	var rep stageError
	msg := next()
	if json.Unmarshal([]byte(msg), &rep) == nil && rep.Ready {
		// The guest's root is in place: the host socket can be bound in
		// it before init runs.
		if plan.uds != "" {
			if err := g.listenHost(plan.uds); err != nil {
				g.log.warn("fc_api", "Simulated guest: no guest-initiated vsock connections: %v", err)
			}
		}
		// The network devices exist and ip= is applied before init runs,
		// as a guest kernel has done by then.
		if err := g.wireNet(plan.nics, plan.cmdline); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("network: %w", err)
		}
		cfgW.Close()
		msg = next()
	}
	if msg == "" {
		// EOF: init was exec'd, and its mount of the root holds the loop
		// device from now on.
		g.loop.release()
		return nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	var se stageError
	if json.Unmarshal([]byte(msg), &se) != nil || se.Msg == "" {
		se.Msg = strings.TrimSpace(msg)
	}
	if se.NoInit {
		return fmt.Errorf("%w: %s", errNoInit, se.Msg)
	}
	return errors.New(se.Msg)
}

// driveTrees opens each drive's backing file as a detached mount (a clone
// of its bind, read-only for a read-only drive) in the fake's mount
// namespace, and sets its Tree to the descriptor the stage process gets it
// as (stageTreeFD on). The stage attaches them at the drives' device
// nodes: a path the stage resolved itself would do for a host path, but
// not for a jailed fake's drive, reached through the jail's root
// (/proc/<fake>/fd/<jail root>/...): that names a mount of the fake's
// namespace, which a bind in the stage's new one refuses (EINVAL). It
// runs on the simulation thread.
func driveTrees(drives []simDrive) ([]*os.File, error) {
	var trees []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, t := range trees {
			t.Close()
		}
		return nil, err
	}
	for i := range drives {
		d := &drives[i]
		fd, err := unix.OpenTree(unix.AT_FDCWD, d.Path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fail(fmt.Errorf("drive %s: open %s as a mount: %w", d.Dev, d.Path, err))
		}
		trees = append(trees, os.NewFile(uintptr(fd), d.Path))
		if d.ReadOnly {
			if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
				return fail(fmt.Errorf("drive %s: make %s read-only: %w", d.Dev, d.Path, err))
			}
		}
		d.Tree = stageTreeFD + i
	}
	return trees, nil
}

// consoleWriter hides the console's type from exec.Cmd, so that it always
// gives the guest a pipe.
type consoleWriter struct{ w io.Writer }

func (c consoleWriter) Write(p []byte) (int, error) { return c.w.Write(p) }

// watch waits for init to end, cleans up, and powers the VM off unless the
// fake itself ended the guest.
func (g *simGuest) watch(onPowerOff func()) {
	err := g.cmd.Wait()
	g.log.info("fc_api", "Simulated guest: init ended (%v).", exitText(err))
	g.cleanup()
	close(g.done)
	g.mu.Lock()
	stopping := g.stopping
	g.mu.Unlock()
	if !stopping && onPowerOff != nil {
		onPowerOff()
	}
}

// exitText renders cmd.Wait's result.
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// cleanup releases the loop device (waiting for the kernel to detach it),
// removes the cgroup and lets the janitor go. init must have ended.
func (g *simGuest) cleanup() { _ = onSim(g.cleanupHere) }

func (g *simGuest) cleanupHere() {
	if g.hostLn != nil {
		_ = g.hostLn.Close()
	}
	g.closeWires()
	if g.loop != nil {
		g.loop.release()
		if err := g.loop.waitDetached(simTimeout); err != nil {
			g.log.warn("fc_api", "Simulated guest: %v", err)
		}
	}
	if g.cg != nil {
		if err := g.cg.destroy(simTimeout); err != nil {
			g.log.warn("fc_api", "Simulated guest: %v", err)
		}
	}
	g.stopJanitor()
}

// pause freezes every process of the guest.
func (g *simGuest) pause() (err error) {
	if e := onSim(func() { err = g.pauseHere() }); e != nil {
		return e
	}
	return err
}

func (g *simGuest) pauseHere() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused {
		return nil
	}
	if g.cg != nil {
		if err := g.cg.setFrozen(true, simTimeout); err != nil {
			_ = g.cg.setFrozen(false, simTimeout)
			return fmt.Errorf("freeze the simulated guest: %w", err)
		}
	} else if err := signalNamespace(g.pid, syscall.SIGSTOP, simTimeout); err != nil {
		_ = signalNamespace(g.pid, syscall.SIGCONT, simTimeout)
		return fmt.Errorf("stop the simulated guest: %w", err)
	}
	g.paused = true
	g.running = make(chan struct{})
	g.syncRoot()
	return nil
}

// syncRoot writes out what the guest wrote to its root file system. A
// real guest's unwritten data is in its memory, which a snapshot keeps; a
// simulated guest's is in the host's cache of its mount, which a copy of
// the image file (a snapshot owning its drives, a template) would miss,
// and a restore boots afresh from that file.
func (g *simGuest) syncRoot() {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root", g.pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_ = unix.Syncfs(fd)
}

// resume thaws the guest.
func (g *simGuest) resume() (err error) {
	if e := onSim(func() { err = g.resumeHere() }); e != nil {
		return e
	}
	return err
}

func (g *simGuest) resumeHere() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.paused {
		return nil
	}
	if g.cg != nil {
		if err := g.cg.setFrozen(false, simTimeout); err != nil {
			return fmt.Errorf("thaw the simulated guest: %w", err)
		}
	} else {
		_ = signalNamespace(g.pid, syscall.SIGCONT, simTimeout)
	}
	g.paused = false
	close(g.running)
	return nil
}

// ctrlAltDel sends SIGTERM to the guest's init (delivered once a paused
// guest is resumed).
func (g *simGuest) ctrlAltDel() {
	_ = onSim(func() { _ = syscall.Kill(g.pid, syscall.SIGTERM) })
}

// stop kills the guest (init's death ends its PID namespace), and waits
// until it is cleaned up. The VM is not powered off: the caller decides
// how the fake ends.
func (g *simGuest) stop() {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	_ = onSim(func() { _ = syscall.Kill(g.pid, syscall.SIGKILL) })
	<-g.done
}

// dialPort connects to the guest's listener on vsock port, once the guest
// runs (a paused guest answers nothing until it is resumed).
func (g *simGuest) dialPort(port uint32) (net.Conn, error) {
	g.mu.Lock()
	running := g.running
	g.mu.Unlock()
	select {
	case <-running:
	case <-g.done:
	}
	select {
	case <-g.done:
		// init's PID may name another process by now.
		return nil, errors.New("the simulated guest has ended")
	default:
	}
	path := fmt.Sprintf("/proc/%d/root%s/%d", g.pid, simVsockDir, port)
	var c net.Conn
	var err error
	if e := onSim(func() { c, err = net.DialTimeout("unix", path, simTimeout) }); e != nil {
		return nil, e
	}
	return c, err
}

// handleSIGTERM makes a SIGTERM of the fake end the guest first (so that
// its mount and loop device are gone when the fake is), then die of the
// signal as Firecracker does.
func handleSIGTERM(g func() *simGuest) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	go func() {
		<-ch
		if s := g(); s != nil {
			s.stop()
		}
		signal.Reset(syscall.SIGTERM)
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}()
}

// rootFromCmdline returns the drive a kernel command line's last
// root=/dev/vdX names: the X-th virtio block device, in the order the
// drives were added; nil when there is none.
func rootFromCmdline(args string, drives []object) object {
	kernel, _, _ := strings.Cut(" "+args+" ", " -- ")
	var root object
	for _, f := range strings.Fields(kernel) {
		v, ok := strings.CutPrefix(f, "root=/dev/vd")
		if !ok || len(v) != 1 || v[0] < 'a' || v[0] > 'z' {
			continue
		}
		root = nil
		if i := int(v[0] - 'a'); i < len(drives) {
			root = drives[i]
		}
	}
	return root
}

// sameObject reports whether a and b are the same decoded JSON object.
func sameObject(a, b object) bool {
	if a == nil || b == nil {
		return false
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
