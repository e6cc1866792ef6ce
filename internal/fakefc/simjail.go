package fakefc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A simulated guest under the fake jailer. The real Firecracker, jailed,
// runs its guest through /dev/kvm: it needs no privilege beyond that
// device, and reaches its kernel, drives and sockets only through its
// chroot, as the jail's uid. The fake's simulated guest needs root on the
// host instead (a loop device, mounts, namespaces, a cgroup), which a
// process chrooted as an unprivileged uid does not have. So the fake
// jailer hands the fake two things the real one does not: a descriptor of
// the host's root directory (envJailHostRoot) and its capabilities, kept
// across the change to the jail's uid as ambient capabilities. The fake
// drops them from every thread's effective set when it starts
// (dropJailCaps): everything it does for the API (opening the drives and
// the kernel, the sockets, the logs, snapshot files) it does chrooted, as
// the jail's uid, with no capability, as Firecracker does. Only the
// simulation thread (simThread) raises them again, leaves the chroot
// through the descriptor and becomes root, to play the part of KVM: it
// builds and runs the guest. The files it gives the guest are the jail's:
// the root drive is the file the jailed fake opened at its in-jail path
// (so the jail's uid must be able to read it, and to write it when it is
// writable), and the other drives are reached through the jail's root.

// envJailHostRoot names the descriptor of the host's root directory the
// fake jailer leaves open for the fake.
const envJailHostRoot = "FAKEFC_JAIL_HOST_ROOT"

// envJailOuterCgroups holds the cgroups (/proc/self/cgroup, lines joined
// with ";") the fake jailer was started in, before it joined the VMM's.
const envJailOuterCgroups = "FAKEFC_JAIL_CGROUPS"

// jailState is what the fake knows of its jail; zero when not jailed.
type jailState struct {
	hostRoot int    // the host's root directory, O_PATH
	jailRoot int    // the jail's root (the fake's /), O_PATH
	outer    string // envJailOuterCgroups
}

var (
	jailMu  sync.Mutex
	jailed  *jailState // nil: not jailed
	simLeft bool       // the simulation thread has left the jail
)

// dropJailCaps, when the fake runs under the fake jailer, drops the
// capabilities the jailer kept from every thread's effective, inheritable
// and ambient sets (they stay permitted, for the simulation thread) and
// notes the jail. It runs first thing in Main.
func dropJailCaps() error {
	v, ok := os.LookupEnv(envJailHostRoot)
	if !ok {
		return nil
	}
	hostRoot, err := strconv.Atoi(v)
	if err != nil || hostRoot < 3 {
		return fmt.Errorf("%s=%q: not a descriptor", envJailHostRoot, v)
	}
	unix.CloseOnExec(hostRoot)
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); e != 0 {
		return fmt.Errorf("clear the ambient capabilities: %w", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		data[i].Effective, data[i].Inheritable = 0, 0
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("drop the effective capabilities: %w", e)
	}
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	jailRoot, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the jail's root: %w", err)
	}
	jailMu.Lock()
	jailed = &jailState{hostRoot: hostRoot, jailRoot: jailRoot, outer: os.Getenv(envJailOuterCgroups)}
	jailMu.Unlock()
	return nil
}

// currentJail returns the fake's jail, nil when it runs without the jailer.
func currentJail() *jailState {
	jailMu.Lock()
	defer jailMu.Unlock()
	return jailed
}

// leaveJail makes the calling thread, locked and never unlocked (the
// simulation thread), root on the host: its capabilities effective again,
// a file system root of its own set to the host's, uid and gid 0. The other
// threads stay chrooted, as the jail's uid, without capabilities.
func (j *jailState) leaveJail() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		data[i].Effective = data[i].Permitted
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("raise the kept capabilities (did the fake jailer start this fake?): %w", err)
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare the file system root: %w", err)
	}
	if err := unix.Fchdir(j.hostRoot); err != nil {
		return fmt.Errorf("enter the host's root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot to the host's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// Raw: the syscall package's versions change every thread.
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgid 0: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
		return fmt.Errorf("setuid 0: %w", e)
	}
	return nil
}

// hostPath is the path, as the simulation thread sees the host, of the
// in-jail path p (absolute, or relative to the jail's root).
func (j *jailState) hostPath(p string) string {
	if len(p) > 0 && p[0] == '/' {
		p = p[1:]
	}
	return fmt.Sprintf("/proc/%d/fd/%d/%s", os.Getpid(), j.jailRoot, p)
}

// jailPlan turns a jailed fake's plan into one for the simulation thread:
// the root drive is opened here, chrooted and as the jail's uid, for
// reading, and writing unless it is read-only, as Firecracker opens it,
// and given to the guest through that descriptor; the other drives are
// checked the same way and reached through the jail's root. The caller
// closes the returned file once the guest has booted (nil when not jailed).
func jailPlan(plan *simPlan) (*os.File, error) {
	j := currentJail()
	if j == nil {
		return nil, nil
	}
	root, err := openJailed(plan.image, plan.readOnly)
	if err != nil {
		return nil, fmt.Errorf("root drive: %w", err)
	}
	for i, d := range plan.drives {
		if err := openAsJail(d.Path, d.ReadOnly); err != nil {
			root.Close()
			return nil, err
		}
		plan.drives[i].Path = j.hostPath(d.Path)
	}
	plan.image = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), root.Fd())
	return root, nil
}

// openJailed opens the drive file p, from a jailed thread (chrooted, as
// the jail's uid), for reading, and writing unless ro, as Firecracker
// opens a drive.
func openJailed(p string, ro bool) (*os.File, error) {
	flag := os.O_RDWR
	if ro {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(p, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("jailed as uid %d: %w", os.Getuid(), err)
	}
	return f, nil
}

// openAsJail checks that the drive file p opens from a jailed thread (see
// openJailed).
func openAsJail(p string, ro bool) error {
	f, err := openJailed(p, ro)
	if err != nil {
		return fmt.Errorf("drive %s: %w", p, err)
	}
	return f.Close()
}

// errSimThread: the simulation thread could not leave the jail.
var errSimThread = errors.New("the simulated guest's thread cannot leave the jail")

// onSim runs f where the simulated guest's work must run: unjailed, right
// here; jailed, on the simulation thread, which has left the jail (see
// above). It may be called from f itself.
func onSim(f func()) error {
	j := currentJail()
	if j == nil {
		f()
		return nil
	}
	var err error
	onSimThread(func() {
		// Only this thread reads or sets simLeft.
		if !simLeft {
			if err = j.leaveJail(); err != nil {
				err = fmt.Errorf("%w: %w", errSimThread, err)
				return
			}
			simLeft = true
		}
		f()
	})
	return err
}

// leaveVMMCgroups moves the process pid, a simulated guest's (its stage,
// before it forks anything) or its janitor, from the VMM's cgroups back to
// those the fake jailer was started in: a real guest has no processes on
// the host, so none may count in, or keep busy, the cgroup the jailer made
// for the VMM. Only the hierarchies where pid is in the fake's own cgroup
// (the VMM's, inherited) are changed: the stage starts in the guest's
// cgroup (kindling-sim/..., in the v2 hierarchy), where it must stay for
// its freezer and its janitor to reach it. It runs on the simulation
// thread.
func (j *jailState) leaveVMMCgroups(pid int) error {
	if j.outer == "" {
		return nil
	}
	outer := cgroupPaths(j.outer, ";")
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", os.Getpid()))
	if err != nil {
		return err
	}
	vmm := cgroupPaths(string(b), "\n")
	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return err
	}
	mounts := cgroupMounts()
	var errs []error
	for _, l := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		_, rest, _ := strings.Cut(l, ":")
		ctrls, path, _ := strings.Cut(rest, ":")
		want, ok := outer[ctrls]
		mnt := mounts[ctrls]
		if !ok || want == path || mnt == "" || path != vmm[ctrls] {
			continue
		}
		f := filepath.Join(mnt, want, "cgroup.procs")
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
			errs = append(errs, fmt.Errorf("move %d to %s: %w", pid, f, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupPaths maps the controllers field of each line of cgroups (lines of
// /proc/PID/cgroup, "hierarchy-ID:controllers:path", separated by sep) to
// the path.
func cgroupPaths(cgroups, sep string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(cgroups), sep) {
		if _, rest, ok := strings.Cut(l, ":"); ok {
			ctrls, path, _ := strings.Cut(rest, ":")
			out[ctrls] = path
		}
	}
	return out
}

// cgroupMounts maps the controllers field of /proc/self/cgroup ("pids",
// "cpu,cpuacct", "name=systemd", "" for v2) to the hierarchy's mount point.
func cgroupMounts() map[string]string {
	out := map[string]string{}
	// This thread's: the fake's (its leader's) is the jail's, which shows
	// no cgroup mount.
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || f[3] != "/" {
			continue
		}
		switch g[0] {
		case "cgroup2":
			out[""] = f[4]
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(g[2], ",") {
				if o != "rw" && o != "ro" && o != "xattr" && !strings.HasPrefix(o, "release_agent") && o != "clone_children" && o != "nsroot" && o != "noprefix" && o != "cpuset_v2_mode" {
					ctrls = append(ctrls, o)
				}
			}
			out[strings.Join(ctrls, ",")] = f[4]
		}
	}
	return out
}
