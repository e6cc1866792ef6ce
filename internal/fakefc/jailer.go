package fakefc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The fake jailer plays Firecracker's jailer (v1.7) for tests on machines
// without one: run as root with the jailer's flags, it builds the chroot
// <chroot-base-dir>/<exec file name>/<id>/root, copies the executable into
// it, makes the VMM's cgroup with the --cgroup settings (for real, under
// --parent-cgroup, in the host's v1 or v2 hierarchy), joins --netns,
// chroots, drops to --uid/--gid and execs the executable with --id and the
// arguments after "--", as the real one does. Like the real jailer it
// removes nothing when the VMM exits. It differs from the real one in that
// it chroots (no pivot_root in a mount namespace of its own), makes no
// device nodes (the fake Firecracker needs none), keeps FAKEFC in the
// environment (so the emulated release is the one the test asked for), and
// KINDLING_SIM_CGROUP_TAG (EnvCgroupTag, for the tests' leak checks), and
// refuses --new-pid-ns and --daemonize with ErrNotEmulated. For the
// simulated guest it also leaves the executable the host's root directory
// open, its capabilities (as ambient ones, dropped from the effective set
// at once) and the cgroups it was started in (simjail.go). The executable
// must be statically linked, as the real Firecracker is. The fake Firecracker's
// command runs JailerMain when it is started under a name containing
// "jailer".

// JailerFlags are the jailer's command line.
type JailerFlags struct {
	ID, ExecFile, ChrootBase, NetNS, ParentCgroup string
	UID, GID, CgroupVersion                       int
	Cgroups                                       []string
	// Args are Firecracker's arguments (after "--").
	Args []string
}

// ParseJailerFlags parses the jailer's command line.
func ParseJailerFlags(args []string) (JailerFlags, error) {
	f := JailerFlags{ChrootBase: "/srv/jailer", CgroupVersion: 1, UID: -1, GID: -1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			f.Args = args[i+1:]
			break
		}
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			return f, fmt.Errorf("%w: unexpected argument %q", ErrUsage, a)
		}
		if name == "new-pid-ns" || name == "daemonize" {
			return f, fmt.Errorf("--%s: %w", name, ErrNotEmulated)
		}
		if i+1 >= len(args) {
			return f, fmt.Errorf("%w: --%s needs a value", ErrUsage, name)
		}
		v := args[i+1]
		i++
		var err error
		switch name {
		case "id":
			f.ID = v
		case "exec-file":
			f.ExecFile = v
		case "chroot-base-dir":
			f.ChrootBase = v
		case "netns":
			f.NetNS = v
		case "parent-cgroup":
			f.ParentCgroup = v
		case "cgroup":
			f.Cgroups = append(f.Cgroups, v)
		case "uid":
			f.UID, err = strconv.Atoi(v)
		case "gid":
			f.GID, err = strconv.Atoi(v)
		case "cgroup-version":
			f.CgroupVersion, err = strconv.Atoi(v)
		case "resource-limit":
			return f, fmt.Errorf("--%s: %w", name, ErrNotEmulated)
		default:
			return f, fmt.Errorf("%w: unknown flag --%s", ErrUsage, name)
		}
		if err != nil {
			return f, fmt.Errorf("%w: --%s %q: %v", ErrUsage, name, v, err)
		}
	}
	switch {
	case f.ID == "" || f.ExecFile == "" || f.UID < 0 || f.GID < 0:
		return f, fmt.Errorf("%w: --id, --exec-file, --uid and --gid are required", ErrUsage)
	case !strings.Contains(filepath.Base(f.ExecFile), "firecracker"):
		return f, fmt.Errorf("%w: the exec file %s must be named like firecracker", ErrUsage, f.ExecFile)
	case f.CgroupVersion != 1 && f.CgroupVersion != 2:
		return f, fmt.Errorf("%w: --cgroup-version %d", ErrUsage, f.CgroupVersion)
	}
	if f.ParentCgroup == "" {
		f.ParentCgroup = filepath.Base(f.ExecFile)
	}
	return f, nil
}

// JailerMain runs the fake jailer with args (without the program name). On
// success it does not return: the process becomes the jailed executable.
func JailerMain(args []string, stderr io.Writer) int {
	f, err := ParseJailerFlags(args)
	if err == nil {
		err = jail(f)
	}
	fmt.Fprintf(stderr, "Jailer error: %v\n", err)
	if errors.Is(err, ErrUsage) {
		return ExitArgParsing
	}
	return ExitError
}

// jail does the jailer's work and execs the VMM; it returns only on error.
func jail(f JailerFlags) error {
	runtime.LockOSThread() // the namespace and credentials go with this thread to exec
	exec := filepath.Base(f.ExecFile)
	root := filepath.Join(f.ChrootBase, exec, f.ID, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := copyExec(f.ExecFile, filepath.Join(root, exec)); err != nil {
		return fmt.Errorf("copy %s into the jail: %w", f.ExecFile, err)
	}
	if err := os.Chown(root, f.UID, f.GID); err != nil {
		return err
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return err
	}
	// The cgroups the jailer was started in, where the simulated guest's
	// processes go (simjail.go).
	outer, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	if err := joinCgroups(f); err != nil {
		return err
	}
	if f.NetNS != "" {
		fd, err := unix.Open(f.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", f.NetNS, err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join netns %s: %w", f.NetNS, err)
		}
		unix.Close(fd)
	}
	// For the simulated guest (simjail.go): the host's root, open across
	// the exec.
	hostRoot, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open the host's root: %w", err)
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot %s: %w", root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(f.GID, f.GID, f.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", f.GID, err)
	}
	// Keep this thread's capabilities across the change of uid, for the
	// simulated guest (simjail.go).
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("keep capabilities: %w", err)
	}
	if err := syscall.Setresuid(f.UID, f.UID, f.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", f.UID, err)
	}
	if err := keepCapsAcrossExec(); err != nil {
		return err
	}
	env := []string{envJailHostRoot + "=" + strconv.Itoa(hostRoot),
		envJailOuterCgroups + "=" + strings.ReplaceAll(strings.TrimSpace(string(outer)), "\n", ";")}
	for _, k := range []string{EnvSettings, EnvCgroupTag} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	argv := append([]string{"/" + exec, "--id", f.ID}, f.Args...)
	return fmt.Errorf("exec %s: %w", exec, syscall.Exec("/"+exec, argv, env))
}

// joinCgroups makes the VMM's cgroup (when there are settings), writes the
// settings and moves this process into it, in every hierarchy it uses.
func joinCgroups(f JailerFlags) error {
	if len(f.Cgroups) == 0 {
		return nil
	}
	const base = "/sys/fs/cgroup"
	dirs := map[string][]string{} // cgroup dir -> settings
	var order []string
	for _, kv := range f.Cgroups {
		file, _, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%w: --cgroup %q is not file=value", ErrUsage, kv)
		}
		d := filepath.Join(base, f.ParentCgroup, f.ID)
		if f.CgroupVersion == 1 {
			ctrl, _, _ := strings.Cut(file, ".")
			d = filepath.Join(base, ctrl, f.ParentCgroup, f.ID)
		}
		if _, ok := dirs[d]; !ok {
			order = append(order, d)
		}
		dirs[d] = append(dirs[d], kv)
	}
	for _, d := range order {
		if f.CgroupVersion == 2 {
			if err := enableControllers(base, f.ParentCgroup, dirs[d]); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
		for _, kv := range dirs[d] {
			file, v, _ := strings.Cut(kv, "=")
			if err := os.WriteFile(filepath.Join(d, file), []byte(v), 0); err != nil {
				return fmt.Errorf("cgroup %s: %w", kv, err)
			}
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
	}
	return nil
}

// enableControllers turns on, from the v2 root down to parent, the
// controllers that settings use.
func enableControllers(base, parent string, settings []string) error {
	var ctrls []string
	for _, kv := range settings {
		c, _, _ := strings.Cut(kv, ".")
		ctrls = append(ctrls, "+"+c)
	}
	dir := base
	for _, part := range append([]string{""}, strings.Split(parent, "/")...) {
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, c := range ctrls {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(c), 0); err != nil {
				return fmt.Errorf("enable %s in %s: %w", c, dir, err)
			}
		}
	}
	return nil
}

// copyExec copies the executable src to the new file dst.
func copyExec(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// keepCapsAcrossExec makes this thread's permitted capabilities ambient,
// so that the executable, run as the jail's uid, has them (and drops them
// from its effective set at once: simjail.go).
func keepCapsAcrossExec() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		data[i].Inheritable = data[i].Permitted
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	for c := 0; c < 64; c++ {
		if data[c/32].Permitted&(1<<(c%32)) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("keep capability %d: %w", c, err)
		}
	}
	return nil
}
