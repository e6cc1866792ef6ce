package preflight

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// outcome is a Result and, for a failure, the error behind it.
type outcome struct {
	Result
	err error
}

// checkKVM opens /dev/kvm for reading and writing, as Firecracker does.
// When fake is set (the Firecracker found is kindling's fake, which needs
// no KVM) a failure is only a warning.
func (h *Host) checkKVM(fake bool) outcome {
	p := h.dev("kvm")
	f, err := h.open(p, os.O_RDWR)
	if err == nil {
		f.Close()
		return outcome{Result: Result{Check: "kvm", Status: OK, Detail: p + " is usable" + h.kvmModule()}}
	}
	var o outcome
	switch {
	case errors.Is(err, fs.ErrNotExist):
		o = outcome{
			Result: Result{Detail: p + ": no such device: this host has no KVM", Fix: h.virtHint()},
			err:    fmt.Errorf("%w: %w", errdefs.ErrNotSupported, err),
		}
	case errors.Is(err, fs.ErrPermission):
		u := userName()
		o = outcome{
			Result: Result{
				Detail: fmt.Sprintf("%s: permission denied for user %s", p, u),
				Fix:    fmt.Sprintf("add %s to the group that owns %s (usually kvm: 'usermod -aG kvm %s', then log in again), or run as root", u, p, u),
			},
			err: err,
		}
	default:
		o = outcome{
			Result: Result{Detail: p + ": " + errdefs.PathProblem(err), Fix: "check that the kvm module loaded without errors (see dmesg)"},
			err:    fmt.Errorf("%w: %w", errdefs.ErrNotSupported, err),
		}
	}
	o.Check, o.Status = "kvm", Fail
	if fake {
		o.Status = Warn
		o.Fix = "the fake Firecracker found needs no KVM, a real one does: " + o.Fix
	}
	return o
}

// kvmModule names the KVM module loaded, and for kvm_intel and kvm_amd
// whether it offers nested virtualisation to its own guests:
// " (kvm_intel, nested: Y)"; "" when none is known.
func (h *Host) kvmModule() string {
	for _, m := range []string{"kvm_intel", "kvm_amd", "kvm_pvm"} {
		if _, err := os.Stat(h.sys("module/" + m)); err != nil {
			continue
		}
		if b, err := os.ReadFile(h.sys("module/" + m + "/parameters/nested")); err == nil {
			return fmt.Sprintf(" (%s, nested: %s)", m, strings.TrimSpace(string(b)))
		}
		return " (" + m + ")"
	}
	return ""
}

// virtHint is the fix for a missing /dev/kvm, read from the CPU's flags.
func (h *Host) virtHint() string {
	flags := cpuFlags(h.proc("cpuinfo"))
	switch {
	case flags["vmx"]:
		return "the CPU offers VT-x (vmx) but KVM is not loaded: run 'modprobe kvm_intel'"
	case flags["svm"]:
		return "the CPU offers AMD-V (svm) but KVM is not loaded: run 'modprobe kvm_amd'"
	case flags["hypervisor"]:
		return "this machine is a VM whose hypervisor offers no nested virtualisation: enable nested virtualisation for it (the nested parameter of kvm_intel or kvm_amd on its host, or a cloud instance type that has it), or run on bare metal"
	case flags != nil:
		return "the CPU shows no VT-x or AMD-V: enable virtualisation in the firmware settings, or run on a machine that has it"
	}
	return "enable nested virtualisation or run on bare metal"
}

// cpuFlags returns the flags of the first CPU in a /proc/cpuinfo file, nil
// if it cannot be read.
func cpuFlags(path string) map[string]bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	flags := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			flags[f] = true
		}
		break
	}
	return flags
}

func userName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Geteuid())
}

// fcOutcome is the firecracker check's result, with what the other checks
// need to know: the release found and whether it is the fake.
type fcOutcome struct {
	Result
	rel  *release
	fake bool
}

// checkFirecracker finds the firecracker executable and asks its release.
func (h *Host) checkFirecracker(ctx context.Context) fcOutcome {
	p, err := h.findFirecracker()
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return fcOutcome{Result: e.Result}
		}
		return fcOutcome{Result: Result{Check: "firecracker", Status: Fail, Detail: err.Error()}}
	}
	bad := func(detail string) fcOutcome {
		return fcOutcome{Result: Result{Check: "firecracker", Status: Fail, Detail: "firecracker " + p + ": " + detail,
			Fix: "give a Firecracker executable of release v1.0 or newer"}}
	}
	r, err := askRelease(ctx, p)
	switch {
	case err != nil:
		return bad(err.Error())
	case r.name != "Firecracker":
		return bad(fmt.Sprintf("says it is %s %s, not Firecracker", r.name, r.version))
	case r.major < 1:
		return bad(fmt.Sprintf("release %s is older than v1.0, the oldest kindling runs", r.version))
	}
	if isFake(ctx, p) {
		return fcOutcome{
			Result: Result{Check: "firecracker", Status: Warn,
				Detail: fmt.Sprintf("firecracker %s: kindling's fake Firecracker (%s), which runs no VMs", p, r.version),
				Fix:    "for real VMs give a real Firecracker: " + FirecrackerHint},
			rel: &r, fake: true,
		}
	}
	return fcOutcome{Result: Result{Check: "firecracker", Status: OK, Detail: fmt.Sprintf("firecracker %s: Firecracker %s", p, r.version)}, rel: &r}
}

// checkJailer finds the jailer and asks its release, which should be fc's.
// As root sandboxes run under the jailer unless $KINDLING_NO_JAILER opts
// out, so there its problems fail the check; otherwise they are warnings
// (the jailer is then needed only for --jailer).
func (h *Host) checkJailer(ctx context.Context, fc *release) Result {
	find := h.FindJailer
	if find == nil {
		find = LookupJailer
	}
	needed := jailerByDefault()
	warn := func(detail, fix string) Result {
		st := Warn
		if needed {
			st = Fail
			fix += "; or run sandboxes with --no-jailer"
		}
		return Result{Check: "jailer", Status: st, Detail: detail, Fix: fix}
	}
	p, err := find(h.Jailer)
	if err != nil {
		why := " (needed only for --jailer)"
		if needed {
			why = " (as root every sandbox runs under the jailer)"
		}
		return warn(err.Error()+why, "run kindling install firecracker, put jailer on PATH, set "+EnvJailer+", or pass --jailer")
	}
	if err := checkExecutable(p); err != nil {
		return warn("jailer "+p+": "+errdefs.PathProblem(err), "give the path of a jailer executable")
	}
	r, err := askRelease(ctx, p)
	switch {
	case err != nil:
		return warn("jailer "+p+": "+err.Error(), "give a jailer of the same release as firecracker")
	case r.name != "Jailer":
		return warn(fmt.Sprintf("jailer %s: says it is %s %s, not Jailer", p, r.name, r.version), "give the path of a jailer executable")
	case fc != nil && r.version != fc.version:
		return warn(fmt.Sprintf("jailer %s: release %s, but firecracker is %s", p, r.version, fc.version), "use the jailer of the same release as firecracker")
	}
	return Result{Check: "jailer", Status: OK, Detail: fmt.Sprintf("jailer %s: Jailer %s", p, r.version)}
}

// checkCgroup finds the cgroup version: kindling runs the jailer with
// --cgroup-version 2, which needs the unified hierarchy.
func (h *Host) checkCgroup() Result {
	base := h.sys("fs/cgroup")
	const fix = "boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2 (until then kindling runs the jailer with cgroup v1)"
	r := Result{Check: "cgroup", Status: Warn, Fix: fix}
	switch {
	case exists(filepath.Join(base, "cgroup.controllers")):
		return Result{Check: "cgroup", Status: OK, Detail: "cgroup v2 (unified hierarchy at " + base + ")"}
	case exists(filepath.Join(base, "unified", "cgroup.controllers")):
		r.Detail = "cgroup v1 and v2 mixed (hybrid hierarchy at " + base + ")"
	case exists(base):
		r.Detail = "cgroup v1 only at " + base
	default:
		r.Detail = "no cgroup file system at " + base
		r.Fix = "mount cgroup2 at " + base + " (the jailer needs it)"
	}
	return r
}

// checkTun opens /dev/net/tun, which taps are made through.
func (h *Host) checkTun() Result {
	p := h.dev("net/tun")
	f, err := h.open(p, os.O_RDWR)
	if err == nil {
		f.Close()
		return Result{Check: "tun", Status: OK, Detail: p + " is usable"}
	}
	r := Result{Check: "tun", Status: Warn, Detail: p + ": " + errdefs.PathProblem(err) + ": --net cannot make or open taps"}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Fix = "load the tun module: 'modprobe tun'"
	case errors.Is(err, fs.ErrPermission):
		r.Fix = "run as root (taps need CAP_NET_ADMIN)"
	default:
		r.Fix = "check the tun module (see dmesg)"
	}
	return r
}

// checkStateRoot makes and removes a directory in the state root, or, when
// the root does not exist yet, in its nearest existing parent.
func (h *Host) checkStateRoot() Result {
	root := h.StateRoot
	fail := func(detail string) Result {
		return Result{Check: "state-root", Status: Fail, Detail: "state root " + root + ": " + detail,
			Fix: "give a writable --root DIR or set KINDLING_ROOT"}
	}
	dir := root
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fail(dir + " is not a directory")
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fail(errdefs.PathProblem(err))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fail("no existing parent directory")
		}
		dir = parent
	}
	tmp, err := os.MkdirTemp(dir, ".kindling-check-*")
	if err != nil {
		return fail("cannot write in " + dir + ": " + errdefs.PathProblem(err))
	}
	if err := os.Remove(tmp); err != nil {
		return fail("remove " + tmp + ": " + errdefs.PathProblem(err))
	}
	if dir != root {
		return Result{Check: "state-root", Status: OK, Detail: "state root " + root + " does not exist yet; kindling can create it in " + dir}
	}
	return Result{Check: "state-root", Status: OK, Detail: "state root " + root + " is writable"}
}

// checkTmpfs looks for tmpfs among the kernel's file systems: the default
// state root lives on /run, a tmpfs, so that it starts empty at boot.
func (h *Host) checkTmpfs() Result {
	p := h.proc("filesystems")
	b, err := os.ReadFile(p)
	if err != nil {
		return Result{Check: "tmpfs", Status: Warn, Detail: p + ": " + errdefs.PathProblem(err), Fix: "mount /proc"}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == "tmpfs" {
			return Result{Check: "tmpfs", Status: OK, Detail: "tmpfs is available"}
		}
	}
	return Result{Check: "tmpfs", Status: Warn, Detail: "the kernel offers no tmpfs",
		Fix: "use a kernel with CONFIG_TMPFS, or give --root on a disk file system (sandbox state then outlives a reboot until 'kindling gc')"}
}

// checkUserNamespaces reads the kernel's user-namespace switches.
func (h *Host) checkUserNamespaces() Result {
	r := Result{Check: "user-namespaces", Status: Warn}
	max, err := readTrim(h.proc("sys/user/max_user_namespaces"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Detail, r.Fix = "the kernel has no user namespaces", "use a kernel with CONFIG_USER_NS"
		return r
	case err != nil:
		r.Detail, r.Fix = "user.max_user_namespaces: "+errdefs.PathProblem(err), "mount /proc"
		return r
	case max == "0":
		r.Detail, r.Fix = "user namespaces are disabled (user.max_user_namespaces = 0)", "sysctl -w user.max_user_namespaces=15000"
		return r
	}
	if h.geteuid() != 0 {
		if v, _ := readTrim(h.proc("sys/kernel/unprivileged_userns_clone")); v == "0" {
			r.Detail = "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
			r.Fix = "sysctl -w kernel.unprivileged_userns_clone=1, or run as root"
			return r
		}
		if v, _ := readTrim(h.proc("sys/kernel/apparmor_restrict_unprivileged_userns")); v == "1" {
			r.Detail = "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)"
			r.Fix = "run as root, or allow them with an AppArmor profile for kindling"
			return r
		}
	}
	return Result{Check: "user-namespaces", Status: OK, Detail: "user namespaces are available (up to " + max + ")"}
}

func (h *Host) geteuid() int {
	if h.euid != nil {
		return h.euid()
	}
	return os.Geteuid()
}

func readTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// jailerByDefault reports whether sandboxes started by this process run
// under the jailer unless told otherwise: as root, without
// $KINDLING_NO_JAILER (the sandbox package's policy).
func jailerByDefault() bool {
	if os.Geteuid() != 0 {
		return false
	}
	off, _ := strconv.ParseBool(os.Getenv("KINDLING_NO_JAILER"))
	return !off
}
