package fakefc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// simPort is the vsock port the test init (testdata/siminit) listens on.
const simPort = 1024

// simBootArgs is the command line the tests give the simulated guest.
const simBootArgs = "console=ttyS0 reboot=k panic=1 init=/sbin/init"

// needRoot skips a test of the simulated guest when not running as root,
// or as a root without what the guest needs (loop devices, CAP_SYS_ADMIN
// for mounts and namespaces), as in an unprivileged container.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("skipping: the simulated guest needs root to mount its image (running as uid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("skipping: the simulated guest needs loop devices: %v", err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	const capSysAdmin = 21
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err == nil && caps&(1<<capSysAdmin) == 0 {
				t.Skipf("skipping: the simulated guest needs CAP_SYS_ADMIN (effective capabilities %s)", strings.TrimSpace(v))
			}
		}
	}
}

// simRootfs builds an ext4 image holding the test init as /sbin/init (or
// no init, when withInit is false).
func simRootfs(t *testing.T, withInit bool) string {
	t.Helper()
	tree := t.TempDir()
	for _, d := range []string{"sbin", "etc", "var"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if withInit {
		root, err := testutil.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		goBin, err := gotool.Path()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(goBin, "build", "-o", filepath.Join(tree, "sbin", "init"), "./internal/fakefc/testdata/siminit")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the test init: %v\n%s", err, out)
		}
	}
	return testutil.Ext4FromDir(t, tree, 32)
}

// simVM is a fake Firecracker running a simulated guest.
type simVM struct {
	*proc
	img string // the root drive
	uds string // the vsock's host socket
}

// simOpts say how to configure a simulated guest.
type simOpts struct {
	img      string // root drive; a fresh image with the test init when ""
	bootArgs string // simBootArgs when ""
	readOnly bool
	settings string
	dir      string   // the fake's working directory; a new one when ""
	env      []string // added to the fake's environment
}

// configureSim spawns a fake and configures a VM with a vsock and an ext4
// root drive, without starting it.
func configureSim(t *testing.T, o simOpts) *simVM {
	t.Helper()
	if o.img == "" {
		o.img = simRootfs(t, true)
	}
	if o.bootArgs == "" {
		o.bootArgs = simBootArgs
	}
	if o.settings == "" {
		o.settings = settingsFor("1.14.2", "")
	}
	p := spawn(t, spawnOpts{settings: o.settings, dir: o.dir, env: o.env})
	v := &simVM{proc: p, img: o.img, uds: filepath.Join(p.dir, "v.sock")}
	// Not a test guest: a kernel the fake does not emulate, so a VM that
	// does not boot as a simulated guest prints the generic console line.
	kernel := writeFile(t, t.TempDir(), "vmlinux", "not a kernel the fake emulates")
	p.must(204, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`)
	p.must(204, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":%q}`, kernel, o.bootArgs))
	p.must(204, "PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":%t}`, o.img, o.readOnly))
	p.must(204, "PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, v.uds))
	return v
}

// bootSimVM configures and starts a simulated guest and waits for the test
// init's console line.
func bootSimVM(t *testing.T, o simOpts) *simVM {
	t.Helper()
	v := configureSim(t, o)
	v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
	v.waitOutput("siminit: up")
	return v
}

// initPID returns the guest init's PID as the host sees it, from the
// fake's log (on stdout without --log-path). The fake logs it before it
// answers the request that booted the guest, but the guest's own output
// on the same stdout can reach the test first: wait for the line.
func (v *simVM) initPID(t *testing.T) int {
	t.Helper()
	v.waitOutput(" runs as PID ")
	m := regexp.MustCompile(`runs as PID (\d+)`).FindAllStringSubmatch(v.stdout.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no init PID in the fake's log: %s", v.stdout)
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	return pid
}

// connect does the hybrid-vsock handshake for port on the VM's socket and
// returns the connection (its reader past the OK line) and the OK line, or
// the error that ended the handshake.
func connect(uds string, port int) (net.Conn, *bufio.Reader, string, error) {
	c, err := net.Dial("unix", uds)
	if err != nil {
		return nil, nil, "", err
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, nil, "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, nil, "", fmt.Errorf("read the handshake answer: %w (got %q)", err, line)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, r, line, nil
}

// ask sends one command to the test init and returns its whole answer.
func (v *simVM) ask(t *testing.T, cmd string) string {
	t.Helper()
	c, r, _, err := connect(v.uds, simPort)
	if err != nil {
		t.Fatalf("connect to port %d: %v\nstdout: %s", simPort, err, v.stdout)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		t.Fatalf("send %q: %v", cmd, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("answer to %q: %v", cmd, err)
	}
	return string(b)
}

// guestInfo is the test init's answer to "info".
type guestInfo struct {
	PID      int      `json:"pid"`
	Hostname string   `json:"hostname"`
	Cmdline  string   `json:"cmdline"`
	Mounts   string   `json:"mounts"`
	Dev      []string `json:"dev"`
	Boots    int      `json:"boots"`
	Ifaces   []string `json:"ifaces"`
	// PDeathSig is init's parent-death signal: 9 (SIGKILL) for it to die
	// with the fake.
	PDeathSig int `json:"pdeathsig"`
}

func (v *simVM) info(t *testing.T) guestInfo {
	t.Helper()
	var in guestInfo
	a := v.ask(t, "info")
	if err := json.Unmarshal([]byte(a), &in); err != nil {
		t.Fatalf("info answer %q: %v", a, err)
	}
	return in
}

// loopsOf returns the loop devices bound to the file img.
func loopsOf(img string) []string {
	var out []string
	ents, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err == nil && strings.TrimSpace(string(b)) == img {
			out = append(out, e)
		}
	}
	return out
}

// cgroup2Mounts returns the mount points of the cgroup v2 hierarchy.
func cgroup2Mounts() []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 {
			out = append(out, f[4])
		}
	}
	return out
}

// simCgroups returns the cgroups of simulated guests of the fake fake:
// <cgroup2 mount>/kindling-sim/<id>-<pid>-<start time>[-t<tag>]. A fake
// that had the same PID before does not count.
func simCgroups(fake fakeID) []string {
	var out []string
	for _, mnt := range cgroup2Mounts() {
		ents, _ := os.ReadDir(filepath.Join(mnt, "kindling-sim"))
		for _, e := range ents {
			if e.IsDir() && fake.owns(e.Name()) {
				out = append(out, filepath.Join(mnt, "kindling-sim", e.Name()))
			}
		}
	}
	return out
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	st, err := kunix.ProcessState(pid)
	return err == nil && st != 'Z'
}

// janitors returns the PIDs of janitor processes of the fake fake (their
// last argument is its cgroup).
func janitors(fake fakeID) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(b, []byte("__kindling-sim-janitor\x00")) && fake.owns(filepath.Base(strings.TrimSuffix(string(b), "\x00"))) && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// checkGone waits until nothing of the simulated guest of the fake fake
// with init initPID and image img is left: no process, loop device, cgroup
// or janitor.
func checkGone(t *testing.T, fake fakeID, initPID int, img string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		if alive(initPID) {
			left = append(left, fmt.Sprintf("init (pid %d)", initPID))
		}
		if l := loopsOf(img); len(l) > 0 {
			left = append(left, fmt.Sprintf("loop devices %v", l))
		}
		if c := simCgroups(fake); len(c) > 0 {
			left = append(left, fmt.Sprintf("cgroups %v", c))
		}
		if j := janitors(fake); len(j) > 0 {
			left = append(left, fmt.Sprintf("janitors %v", j))
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind by the simulated guest: %s", strings.Join(left, ", "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// debugfsCat returns the file path of the ext4 image img, read with
// debugfs (without mounting it).
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		debugfs = "/usr/sbin/debugfs" // not on every user's PATH
	}
	out, err := exec.Command(debugfs, "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func TestSimGuestBoot(t *testing.T) {
	needRoot(t)
	testutil.CheckLeaks(t)
	v := configureSim(t, simOpts{bootArgs: simBootArgs + " ip=10.0.0.2::10.0.0.1:255.255.255.0:simhost::off"})
	// Two more drives, seen in the guest as files at /dev/vdb and /dev/vdc.
	data := writeFile(t, t.TempDir(), "data.img", "data drive")
	ro := writeFile(t, t.TempDir(), "ro.img", "read-only drive")
	v.must(204, "PUT", "/drives/data", fmt.Sprintf(`{"drive_id":"data","path_on_host":%q,"is_root_device":false,"is_read_only":false}`, data))
	v.must(204, "PUT", "/drives/ro", fmt.Sprintf(`{"drive_id":"ro","path_on_host":%q,"is_root_device":false,"is_read_only":true}`, ro))
	v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
	v.waitOutput("siminit: up")
	fake, pid := v.fakeID(), v.initPID(t)
	if !strings.Contains(v.stdout.String(), "siminit: up boot=1 pid=1 host=simhost\n") {
		t.Errorf("console: %q, want the init's line with pid 1 and host simhost", v.stdout)
	}
	loops := loopsOf(v.img)
	if len(loops) != 1 {
		t.Fatalf("loop devices of the image while the guest runs: %v, want one", loops)
	}
	// The guest's cgroup is named after the VM and this very fake (its PID
	// and start time), and the log says which it is.
	if cgs := simCgroups(fake); len(cgs) == 1 {
		want := "test-vm" + fake.suffix()
		if tag := os.Getenv(fakefc.EnvCgroupTag); tag != "" {
			want += "-t" + tag
		}
		if filepath.Base(cgs[0]) != want {
			t.Errorf("the guest's cgroup is %s, want %s", cgs[0], want)
		}
		if !strings.Contains(v.stdout.String(), "Simulated guest: cgroup "+cgs[0]+" freezes it.") {
			t.Errorf("the fake's log does not name the guest's cgroup %s:\n%s", cgs[0], v.stdout)
		}
	} else if !strings.Contains(v.stdout.String(), "no cgroup freezer") {
		t.Errorf("cgroups of the guest: %v, want one (or the log saying there is no freezer):\n%s", cgs, v.stdout)
	}
	// The guest's mounts live in its own namespace: none shows on the host.
	dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(loops[0])))
	if mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); err != nil || !strings.Contains(string(mi), " - ext4 "+dev+" rw") {
		t.Errorf("the guest's own mount table has no %s mounted read-write (%v):\n%s", dev, err, mi)
	}
	for _, pid := range []string{"self", "1"} {
		mi, err := os.ReadFile("/proc/" + pid + "/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(mi), dev+" ") || strings.Contains(string(mi), " kindling-sim ") {
			t.Errorf("a mount of the guest (%s or its scratch tmpfs) shows in /proc/%s/mountinfo:\n%s", dev, pid, mi)
		}
	}

	c, r, ok, err := connect(v.uds, simPort)
	if err != nil {
		t.Fatalf("CONNECT %d: %v", simPort, err)
	}
	if !regexp.MustCompile(`^OK \d+\n$`).MatchString(ok) {
		t.Errorf("handshake answer %q, want OK <port>", ok)
	}
	msg := strings.Repeat("through the bridge ", 5000)
	fmt.Fprintln(c, "echo")
	go func() {
		io.WriteString(c, msg)
		c.(*net.UnixConn).CloseWrite()
	}()
	back, err := io.ReadAll(r)
	c.Close()
	if err != nil || string(back) != msg {
		t.Errorf("echo of %d bytes: got %d bytes, %v", len(msg), len(back), err)
	}
	if a := v.ask(t, "ping"); a != "pong\n" {
		t.Errorf("ping: %q", a)
	}

	// A port nobody listens on: the connection is closed, as Firecracker
	// closes it.
	if c, _, line, err := connect(v.uds, simPort+1); err == nil {
		c.Close()
		t.Errorf("CONNECT to an unanswered port answered %q", line)
	}
	if c, _, line, err := connect(v.uds, -1); err == nil {
		c.Close()
		t.Errorf("a malformed CONNECT answered %q", line)
	}

	in := v.info(t)
	if in.PID != 1 || in.Hostname != "simhost" {
		t.Errorf("guest sees pid %d hostname %q, want 1 and simhost", in.PID, in.Hostname)
	}
	if in.PDeathSig != int(syscall.SIGKILL) {
		t.Errorf("init's parent-death signal is %d, want %d (SIGKILL)", in.PDeathSig, syscall.SIGKILL)
	}
	wantCmdline := simBootArgs + " ip=10.0.0.2::10.0.0.1:255.255.255.0:simhost::off kindling.vsock=unix:/run/kindling-vsock\n"
	if in.Cmdline != wantCmdline {
		t.Errorf("/proc/cmdline = %q, want %q", in.Cmdline, wantCmdline)
	}
	for _, m := range []string{" / ext4 rw,", " /proc proc ", " /sys sysfs ro,", " /dev tmpfs ", " /dev/pts devpts ", " /tmp tmpfs ", " /run tmpfs "} {
		if !strings.Contains(in.Mounts, m) {
			t.Errorf("guest mounts have no %q:\n%s", m, in.Mounts)
		}
	}
	if want := []string{"lo up|loopback|running"}; strings.Join(in.Ifaces, ",") != strings.Join(want, ",") {
		t.Errorf("guest network interfaces %q, want %q (its own network namespace)", in.Ifaces, want)
	}
	for _, d := range []string{"console", "full", "null", "ptmx", "pts", "random", "tty", "urandom", "zero"} {
		if !strings.Contains(" "+strings.Join(in.Dev, " ")+" ", " "+d+" ") {
			t.Errorf("guest /dev has no %s: %v", d, in.Dev)
		}
	}

	for _, c := range []struct{ cmd, want string }{
		{"cat /dev/vdb", "data drive"},
		{"cat /dev/vdc", "read-only drive"},
		{"write /dev/vdb written by the guest", "ok\n"},
		{"write /dev/vdc written by the guest", "error open /dev/vdc: read-only file system\n"},
	} {
		if a := v.ask(t, c.cmd); a != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, a, c.want)
		}
	}
	// A guest-initiated connection reaches <uds>_<port> on the host.
	hostLn, err := net.Listen("unix", v.uds+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	go func() {
		c, err := hostLn.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "host got %q", b)
	}()
	if a := v.ask(t, "dial 5000 hello host"); a != `host got "hello host"` {
		t.Errorf("guest-initiated connection: %q", a)
	}
	if a := v.ask(t, "dial 5001 nobody"); !strings.HasPrefix(a, "error handshake: EOF") {
		t.Errorf("guest-initiated connection to a port nobody listens on: %q, want the connection closed", a)
	}
	if b, _ := os.ReadFile(data); string(b) != "written by the guest" {
		t.Errorf("data drive after the guest wrote it: %q", b)
	}
	if a := v.ask(t, "write /etc/written hello from the guest"); a != "ok\n" {
		t.Fatalf("write: %q", a)
	}
	if a := v.ask(t, "poweroff"); a != "bye\n" {
		t.Errorf("poweroff: %q", a)
	}
	if code, sig := v.waitExit(10 * time.Second); code != 0 {
		t.Errorf("fake ended with code %d signal %v after a guest power-off, want exit 0\nstdout: %s", code, sig, v.stdout)
	}
	// reboot(2) in a PID namespace ends its init with SIGINT.
	if !strings.Contains(v.stdout.String(), "init ended (signal: interrupt)") {
		t.Errorf("the fake's log does not show init ended by the power-off:\n%s", v.stdout)
	}
	checkGone(t, fake, pid, v.img)
	if got := debugfsCat(t, v.img, "/etc/written"); got != "hello from the guest" {
		t.Errorf("file written by the guest, read from the image: %q", got)
	}
}

func TestSimGuestPause(t *testing.T) {
	needRoot(t)
	for name, settings := range map[string]string{
		"cgroup freezer": "",
		"SIGSTOP":        settingsFor("1.14.2", `"sim_sigstop":true`),
	} {
		t.Run(name, func(t *testing.T) { testSimGuestPause(t, settings) })
	}
}

func testSimGuestPause(t *testing.T, settings string) {
	testutil.CheckLeaks(t)
	v := bootSimVM(t, simOpts{settings: settings})
	fake, pid := v.fakeID(), v.initPID(t)
	if settings == "" && len(simCgroups(fake)) == 0 {
		t.Skipf("skipping: the fake found no usable cgroup v2 freezer on this host:\n%s", v.stdout)
	}

	// A connection made before the pause: the guest's echo answers at once.
	c, r, _, err := connect(v.uds, simPort)
	if err != nil {
		t.Fatalf("CONNECT: %v", err)
	}
	defer c.Close()
	fmt.Fprintln(c, "echo")
	echo := func(s string) <-chan string {
		got := make(chan string, 1)
		go func() {
			b := make([]byte, len(s))
			_, err := io.ReadFull(r, b)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(b)
		}()
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatalf("write %q: %v", s, err)
		}
		return got
	}
	select {
	case got := <-echo("before "):
		if got != "before " {
			t.Fatalf("echo before the pause: %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no echo before the pause")
	}

	v.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
	if cg := simCgroups(fake); len(cg) == 1 {
		if b, err := os.ReadFile(filepath.Join(cg[0], "cgroup.events")); err != nil || !strings.Contains(string(b), "frozen 1") {
			t.Errorf("paused guest's cgroup.events: %q (%v), want frozen 1", b, err)
		}
	} else if st, err := kunix.ProcessState(pid); err != nil || st != 'T' {
		t.Errorf("paused guest's init (no cgroup %v) in state %c (%v), want T", cg, st, err)
	}
	// Neither the open connection nor a new one gets an answer while paused.
	during := echo("during ")
	answer := make(chan string, 1)
	go func() {
		c, r, _, err := connect(v.uds, simPort)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer c.Close()
		fmt.Fprintln(c, "ping")
		b, _ := io.ReadAll(r)
		answer <- string(b)
	}()
	select {
	case a := <-answer:
		t.Fatalf("a paused guest answered a new connection: %q", a)
	case a := <-during:
		t.Fatalf("a paused guest echoed %q", a)
	case <-time.After(300 * time.Millisecond):
	}
	v.must(204, "PATCH", "/vm", `{"state":"Resumed"}`)
	for what, ch := range map[string]<-chan string{"echo": during, "ping": answer} {
		want := map[string]string{"echo": "during ", "ping": "pong\n"}[what]
		select {
		case a := <-ch:
			if a != want {
				t.Errorf("%s after resume: %q, want %q", what, a, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s answer 10s after resume", what)
		}
	}
	c.Close()

	// Ctrl-Alt-Del is a SIGTERM to init, which the test init ends on.
	v.must(204, "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	if code, sig := v.waitExit(10 * time.Second); code != 0 {
		t.Errorf("fake ended with code %d signal %v after Ctrl-Alt-Del, want exit 0", code, sig)
	}
	v.waitOutput("siminit: SIGTERM, exiting")
	checkGone(t, fake, pid, v.img)
}

// The guest dies with the fake even where no janitor kills what is left
// in its cgroup (here: pause by SIGSTOP, so no cgroup): init has SIGKILL as
// its parent-death signal, whichever thread of the stage process exec'd it.
// Before the stage set it on the thread that execs, about one boot in
// eight left init without one, and a killed fake left its guest running,
// reparented to the host's init.
func TestSimGuestDiesWithTheFake(t *testing.T) {
	needRoot(t)
	img := simRootfs(t, true)
	settings := settingsFor("1.14.2", `"sim_sigstop":true`)
	for i := range 10 {
		v := bootSimVM(t, simOpts{img: img, settings: settings})
		fake, pid := v.fakeID(), v.initPID(t)
		if in := v.info(t); in.PDeathSig != int(syscall.SIGKILL) {
			t.Errorf("boot %d: init's parent-death signal is %d, want %d (SIGKILL)", i, in.PDeathSig, syscall.SIGKILL)
		}
		v.kill()
		checkGone(t, fake, pid, img)
	}
}

func TestSimGuestKilled(t *testing.T) {
	needRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			v := bootSimVM(t, simOpts{})
			fake, pid := v.fakeID(), v.initPID(t)
			// Frozen, the guest must die too.
			v.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
			if err := v.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if _, got := v.waitExit(10 * time.Second); got != sig {
				t.Errorf("fake ended by signal %v, want %v", got, sig)
			}
			checkGone(t, fake, pid, v.img)
			// The image is whole again: it mounts, and a new guest boots from it.
			v2 := bootSimVM(t, simOpts{img: v.img})
			if in := v2.info(t); in.Boots != 2 {
				t.Errorf("second boot from the image counts %d boots, want 2", in.Boots)
			}
		})
	}
}

func TestSimGuestSnapshot(t *testing.T) {
	needRoot(t)
	// 1.16 takes a vsock_override: the old socket file stays, as with
	// Firecracker.
	v := bootSimVM(t, simOpts{settings: settingsFor("1.16.1", "")})
	fake, pid := v.fakeID(), v.initPID(t)
	if a := v.ask(t, "write /etc/before snapshot"); a != "ok\n" {
		t.Fatalf("write: %q", a)
	}
	v.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
	state, mem := filepath.Join(v.dir, "vm.state"), filepath.Join(v.dir, "vm.mem")
	v.must(204, "PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem))
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Simulated bool `json:"simulated"`
	}
	if err := json.Unmarshal(b, &st); err != nil || !st.Simulated {
		t.Errorf("snapshot state does not say simulated (%v): %s", err, b)
	}
	v.kill()
	checkGone(t, fake, pid, v.img)

	for _, resume := range []bool{true, false} {
		t.Run(fmt.Sprintf("resume_vm=%t", resume), func(t *testing.T) {
			r := spawn(t, spawnOpts{settings: settingsFor("1.16.1", "")})
			uds := filepath.Join(r.dir, "v.sock")
			r.must(204, "PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q,"resume_vm":%t,"vsock_override":{"uds_path":%q}}`, state, mem, resume, uds))
			rv := &simVM{proc: r, img: v.img, uds: uds}
			if !resume {
				r.must(204, "PATCH", "/vm", `{"state":"Resumed"}`)
			}
			r.waitOutput("siminit: up")
			in := rv.info(t)
			if in.PID != 1 || in.Boots < 2 {
				t.Errorf("restored guest: pid %d, boot %d: want a fresh init (pid 1) booted again", in.PID, in.Boots)
			}
			if got := rv.ask(t, "ping"); got != "pong\n" {
				t.Errorf("ping after restore: %q", got)
			}
			rFake, rInit := r.fakeID(), rv.initPID(t)
			rv.ask(t, "poweroff")
			if code, _ := r.waitExit(10 * time.Second); code != 0 {
				t.Errorf("restored fake exit %d after power-off", code)
			}
			checkGone(t, rFake, rInit, v.img)
		})
	}
	if got := debugfsCat(t, v.img, "/etc/before"); got != "snapshot" {
		t.Errorf("file written before the snapshot: %q", got)
	}
}

func TestSimGuestNotBooted(t *testing.T) {
	needRoot(t)
	t.Run("no init in the image", func(t *testing.T) {
		v := configureSim(t, simOpts{img: simRootfs(t, false)})
		v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
		v.waitOutput("fake-firecracker: guest started")
		if l := loopsOf(v.img); len(l) != 0 {
			t.Errorf("loop devices left after a refused simulated boot: %v", l)
		}
		if c, _, line, err := connect(v.uds, simPort); err == nil {
			c.Close()
			t.Errorf("CONNECT without a simulated guest answered %q", line)
		}
	})
	t.Run("root drive not ext4", func(t *testing.T) {
		img := writeFile(t, t.TempDir(), "rootfs.img", strings.Repeat("x", 4096))
		v := configureSim(t, simOpts{img: img})
		v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
		v.waitOutput("fake-firecracker: guest started")
	})
	t.Run("init named by init=", func(t *testing.T) {
		v := configureSim(t, simOpts{bootArgs: "console=ttyS0 init=/nope"})
		v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
		v.waitOutput("fake-firecracker: guest started")
		if strings.Contains(v.stdout.String(), "siminit") {
			t.Errorf("the image's /sbin/init ran though init= names another: %s", v.stdout)
		}
	})
}

func TestSimGuestRefusedWithoutRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		// Not root: the fake runs as this user, and must refuse.
		v := configureSim(t, simOpts{})
		checkRefused(t, v.do)
		return
	}
	// As root, run the fake as nobody, with what it needs readable.
	dir := testutil.ShortTempDir(t)
	img := filepath.Join(dir, "rootfs.ext4")
	b, err := os.ReadFile(simRootfs(t, true))
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	for f, content := range map[string][]byte{img: b, kernel: []byte("kernel")} {
		if err := os.WriteFile(f, content, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	fake := testutil.FakeFirecracker(t)
	for d, mode := range map[string]os.FileMode{dir: 0o777, filepath.Dir(fake): 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "api.sock")
	cmd := exec.Command(fake, "--api-sock", sock, "--id", "test-vm")
	cmd.Dir = dir
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	t.Cleanup(client.CloseIdleConnections)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		var resp *http.Response
		for deadline := time.Now().Add(10 * time.Second); ; {
			req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
			resp, err = client.Do(req)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, out)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, r := range [][2]string{
		{"/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":%q}`, kernel, simBootArgs)},
		{"/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":false}`, img)},
		{"/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, filepath.Join(dir, "v.sock"))},
	} {
		if status, body := do("PUT", r[0], r[1]); status != 204 {
			t.Fatalf("PUT %s as nobody: %d %s", r[0], status, body)
		}
	}
	checkRefused(t, do)
	if l := loopsOf(img); len(l) != 0 {
		t.Errorf("loop devices after a refused boot: %v", l)
	}
}

// checkRefused checks, through do, that InstanceStart of a simulated
// guest is refused for want of root, and that the process keeps serving.
func checkRefused(t *testing.T, do func(method, path, body string) (int, string)) {
	t.Helper()
	status, body := do("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	msg := fault(t, body)
	if status != 400 || !strings.HasPrefix(msg, "Start microvm error: simulated guest: ") || !strings.Contains(msg, "needs root (running as uid ") {
		t.Errorf("InstanceStart without root: %d %q, want 400 saying it needs root", status, msg)
	}
	if status, body := do("GET", "/", ""); status != 200 || !strings.Contains(body, `"Not started"`) {
		t.Errorf("GET / after the refusal: %d %s", status, body)
	}
}

func TestSimGuestConsole(t *testing.T) {
	needRoot(t)
	for _, toFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial file %t", toFile), func(t *testing.T) {
			v := configureSim(t, simOpts{})
			console := func() string { return v.stdout.String() }
			if toFile {
				path := filepath.Join(t.TempDir(), "serial.out")
				v.must(204, "PUT", "/serial", fmt.Sprintf(`{"serial_out_path":%q}`, path))
				console = func() string {
					b, _ := os.ReadFile(path)
					return string(b)
				}
			}
			v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(console(), "siminit: up") {
				if time.Now().After(deadline) {
					t.Fatalf("no init line on the console: %q\nstdout: %s", console(), v.stdout)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if a := v.ask(t, "console through /dev/console"); a != "ok\n" {
				t.Fatalf("console: %q", a)
			}
			v.ask(t, "poweroff")
			if code, _ := v.waitExit(10 * time.Second); code != 0 {
				t.Errorf("exit %d after power-off", code)
			}
			// Both lines, in order: /dev/console does not write over the
			// console from its start.
			got := console()
			up, through := strings.Index(got, "siminit: up"), strings.Index(got, "through /dev/console\n")
			if up < 0 || through < up {
				t.Errorf("console %q: want the init line, then the /dev/console line", got)
			}
		})
	}
}

func TestSimGuestsSideBySide(t *testing.T) {
	needRoot(t)
	img := simRootfs(t, true)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	type booted struct {
		v    *simVM
		fake fakeID
		init int
	}
	guests := make([]booted, n)
	for i := range guests {
		// Each guest boots its own copy of the image, all at once.
		p := filepath.Join(t.TempDir(), "rootfs.ext4")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		v := configureSim(t, simOpts{img: p, bootArgs: fmt.Sprintf("%s ip=::::guest%d", simBootArgs, i)})
		guests[i].v = v
	}
	errs := make(chan error, n)
	for _, g := range guests {
		go func() {
			status, body := g.v.do("PUT", "/actions", `{"action_type":"InstanceStart"}`)
			if status != 204 {
				errs <- fmt.Errorf("InstanceStart: %d %s", status, body)
				return
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range guests {
		g := &guests[i]
		g.v.waitOutput("siminit: up")
		g.fake, g.init = g.v.fakeID(), g.v.initPID(t)
		if in := g.v.info(t); in.Hostname != fmt.Sprintf("guest%d", i) || in.PID != 1 {
			t.Errorf("guest %d: hostname %q pid %d", i, in.Hostname, in.PID)
		}
		if l := loopsOf(g.v.img); len(l) != 1 {
			t.Errorf("guest %d: loop devices %v, want one of its own", i, l)
		}
	}
	for _, g := range guests {
		g.v.ask(t, "poweroff")
	}
	for i, g := range guests {
		if code, _ := g.v.waitExit(10 * time.Second); code != 0 {
			t.Errorf("guest %d: fake exit %d after power-off", i, code)
		}
		checkGone(t, g.fake, g.init, g.v.img)
	}
}

// The janitor outlives the fake, so it must not look like one of the
// sandbox's processes: kindling, and the leak checks of its tests, find
// those by a working directory, argument or environment value naming the
// sandbox's directory or state root (kunix.ProcessesUsingDir), and kill
// them. A janitor killed before it was done left its guest's cgroup
// behind: the cgroups that other packages' tests leaked on the CI host.
func TestSimGuestJanitorStandsApart(t *testing.T) {
	needRoot(t)
	// As kindling's monitor starts Firecracker: in the sandbox's
	// directory, with the state root in its environment.
	dir := testutil.ShortTempDir(t)
	v := bootSimVM(t, simOpts{dir: dir, env: []string{"KINDLING_ROOT=" + dir}})
	fake, pid := v.fakeID(), v.initPID(t)
	if len(simCgroups(fake)) == 0 {
		t.Skipf("skipping: the fake found no usable cgroup v2 freezer on this host, so runs no janitor:\n%s", v.stdout)
	}
	js := janitors(fake)
	if len(js) != 1 {
		t.Fatalf("janitors of the fake: %v, want one", js)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", js[0])); err != nil || cwd != "/" {
		t.Errorf("the janitor works in %q (%v), want /", cwd, err)
	}
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", js[0])); err != nil || len(env) != 0 {
		t.Errorf("the janitor's environment: %q (%v), want none", env, err)
	}
	procs, err := kunix.ProcessesUsingDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fakeFound bool
	for _, p := range procs {
		if p.PID == js[0] {
			t.Errorf("the janitor (pid %d, %q, cwd %s) is among the processes using %s", p.PID, p.Args, p.Cwd, dir)
		}
		fakeFound = fakeFound || p.PID == fake.pid
	}
	if !fakeFound {
		t.Errorf("the fake (pid %d) is not among the processes using %s: %+v", fake.pid, dir, procs)
	}
	v.kill()
	checkGone(t, fake, pid, v.img)
}

// A guest's boot removes the cgroups that fakes no longer running left
// empty (their janitor killed, or never started), and only those.
func TestSimGuestSweepsLeftCgroups(t *testing.T) {
	needRoot(t)
	mnts := cgroup2Mounts()
	if len(mnts) == 0 {
		t.Skip("skipping: no cgroup v2 hierarchy mounted")
	}
	parent := filepath.Join(mnts[0], "kindling-sim")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	start, err := kunix.ProcessStartTime(self)
	if err != nil {
		t.Fatal(err)
	}
	// Names with this process's PID: made by a process that runs (this
	// one), or by one that had its PID before (another start time).
	pre := fmt.Sprintf("sweeptest%d", self)
	tests := []struct {
		name    string
		young   bool // made just now
		busy    bool // a process in it
		removed bool
	}{
		{name: fmt.Sprintf("%s-dead-%d-%d", pre, self, start+1), removed: true},
		{name: fmt.Sprintf("%s-deadtagged-%d-%d-tsome_tag1", pre, self, start+1), removed: true},
		{name: fmt.Sprintf("%s-live-%d-%d", pre, self, start)},
		{name: fmt.Sprintf("%s-young-%d-%d", pre, self, start+1), young: true},
		{name: fmt.Sprintf("%s-busy-%d-%d", pre, self, start+1), busy: true},
		{name: fmt.Sprintf("%s-oldform-%d", pre, self)},
		{name: fmt.Sprintf("%s-badtag-%d-%d-t-x", pre, self, start+1)},
	}
	for _, tt := range tests {
		dir := filepath.Join(parent, tt.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(dir) })
		if tt.busy {
			d, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sleep", "60")
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.Fd())}
			err = cmd.Start()
			d.Close()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		}
		if !tt.young {
			old := time.Now().Add(-2 * time.Minute)
			if err := os.Chtimes(dir, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	v := bootSimVM(t, simOpts{})
	for _, tt := range tests {
		_, err := os.Stat(filepath.Join(parent, tt.name))
		if gone := errors.Is(err, os.ErrNotExist); gone != tt.removed {
			t.Errorf("cgroup %s: removed %t (%v), want %t", tt.name, gone, err, tt.removed)
		}
	}
	fake, pid := v.fakeID(), v.initPID(t)
	v.ask(t, "poweroff")
	v.waitExit(10 * time.Second)
	checkGone(t, fake, pid, v.img)
}
