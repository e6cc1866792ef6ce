package fakefc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Hidden first arguments that make the fake's executable, re-executed, run
// one of the simulated guest's helper processes instead of the fake.
const (
	// stageArg: the process that sets up the guest's mounts inside its
	// new namespaces and then becomes the guest's init (PID 1).
	stageArg = "__kindling-sim-stage"
	// janitorArg: the process that removes the guest's cgroup once the
	// fake is gone, even when it was killed.
	janitorArg = "__kindling-sim-janitor"
)

// Descriptors the stage process gets from the fake.
const (
	stageConfigFD = 3 // read: the stageConfig as JSON
	stageErrFD    = 4 // write: an error message; EOF (close on exec) means init runs
	stageTreeFD   = 5 // and on: the drives' backing files as detached mounts (simDrive.Tree)
)

// stageConfig is what the stage process needs to turn itself into the
// guest's init.
type stageConfig struct {
	Loop     string     `json:"loop"`      // the root drive's loop device
	ReadOnly bool       `json:"read_only"` // mount the root read-only
	Hostname string     `json:"hostname"`
	Cmdline  string     `json:"cmdline"`   // shown as /proc/cmdline
	Init     string     `json:"init"`      // absolute path inside the root
	Args     []string   `json:"args"`      // argv[1:] of init
	Env      []string   `json:"env"`       // init's environment
	Scratch  string     `json:"scratch"`   // an existing host directory to mount the stage's tmpfs on
	VsockDir string     `json:"vsock_dir"` // created in the guest's /run
	Drives   []simDrive `json:"drives"`    // bound in the guest's /dev
}

// runStage is the stage process: it runs in new mount, PID, UTS, IPC and
// network namespaces as PID 1, builds the guest's root and execs init. An
// error is written to the error descriptor and ends the process with
// status 1.
func runStage() int {
	errw := os.NewFile(stageErrFD, "stage-errors")
	unix.CloseOnExec(stageErrFD)
	unix.CloseOnExec(stageConfigFD)
	cfgFile := os.NewFile(stageConfigFD, "stage-config")
	var cfg stageConfig
	err := json.NewDecoder(cfgFile).Decode(&cfg)
	for _, d := range cfg.Drives {
		if d.Tree >= stageTreeFD {
			unix.CloseOnExec(d.Tree)
		}
	}
	if err == nil {
		err = stage(cfg, func() error {
			// Tell the fake the root is ready, and wait until it closes
			// the configuration pipe.
			if err := json.NewEncoder(errw).Encode(stageError{Ready: true}); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, cfgFile)
			return err
		})
	}
	// stage returns only on failure: on success init has replaced us.
	if err == nil {
		err = errors.New("the stage returned without exec'ing init")
	}
	_ = json.NewEncoder(errw).Encode(stageError{Msg: err.Error(), NoInit: errors.Is(err, errNoInit)})
	return ExitError
}

// errNoInit is the stage's failure when the image holds no init program.
var errNoInit = errors.New("no init program")

// stage builds the guest's root filesystem tree, calls ready, and execs
// init.
func stage(cfg stageConfig, ready func() error) error {
	// Nothing mounted here may reach the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// A private tmpfs, seen only in this namespace, holds the mount point
	// of the new root and the command-line file.
	if err := unix.Mount("kindling-sim", cfg.Scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700,size=1m"); err != nil {
		return fmt.Errorf("mount scratch tmpfs on %s: %w", cfg.Scratch, err)
	}
	root := filepath.Join(cfg.Scratch, "root")
	cmdline := filepath.Join(cfg.Scratch, "cmdline")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cmdline, []byte(cfg.Cmdline+"\n"), 0o444); err != nil {
		return err
	}
	var flags uintptr
	if cfg.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(cfg.Loop, root, "ext4", flags, ""); err != nil {
		return fmt.Errorf("mount root filesystem %s: %w", cfg.Loop, err)
	}
	if err := setupRoot(root, cfg); err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root under the new one; the
	// detach then drops it, leaving only the image and its mounts.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.Init); err != nil {
		return fmt.Errorf("%w %s in the root filesystem: %w", errNoInit, cfg.Init, err)
	}
	if err := ready(); err != nil {
		return fmt.Errorf("wait for the fake: %w", err)
	}
	// The parent-death signal that makes init die with the fake is a
	// thread's, not the process's: the fake set it on this process's
	// main thread, and an exec from another thread (wherever the Go
	// scheduler has this goroutine) makes that thread the process, without
	// it. So the thread that execs sets it too. Until the exec the main
	// thread's stands in for it: no moment goes without one.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set the parent-death signal: %w", err)
	}
	argv := append([]string{cfg.Init}, cfg.Args...)
	if err := unix.Exec(cfg.Init, argv, cfg.Env); err != nil {
		return fmt.Errorf("exec init %s: %w", cfg.Init, err)
	}
	return nil
}

// loopbackUp brings up lo in the guest's new network namespace, as a
// kernel's network init does.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// mountSpec is one mount made under the new root.
type mountSpec struct {
	target string // relative to the root
	fstype string
	flags  uintptr
	data   string
	mode   os.FileMode // of the mount point, when created
}

// setupRoot mounts what a kernel and an early init leave mounted under
// root, makes the device nodes, and binds the command line over
// /proc/cmdline. Missing mount points are created in the image, as an init
// would need them there.
func setupRoot(root string, cfg stageConfig) error {
	const common = unix.MS_NOSUID | unix.MS_NODEV
	mounts := []mountSpec{
		{"proc", "proc", common | unix.MS_NOEXEC, "", 0o555},
		// The host's sysfs: read-only, so the guest cannot change the host.
		{"sys", "sysfs", common | unix.MS_NOEXEC | unix.MS_RDONLY, "", 0o555},
		{"dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=0755,size=64k", 0o755},
		{"dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0o755},
		{"dev/shm", "tmpfs", common, "mode=1777", 0o1777},
		{"tmp", "tmpfs", common, "mode=1777", 0o1777},
		{"run", "tmpfs", common, "mode=0755", 0o755},
	}
	for _, m := range mounts {
		dir := filepath.Join(root, m.target)
		if err := os.MkdirAll(dir, m.mode); err != nil {
			return fmt.Errorf("make mount point /%s: %w", m.target, err)
		}
		if err := unix.Mount(m.fstype, dir, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on /%s: %w", m.fstype, m.target, err)
		}
		if m.target == "dev" {
			if err := makeDevices(dir); err != nil {
				return err
			}
		}
	}
	for _, d := range cfg.Drives {
		if err := bindDrive(root, d); err != nil {
			return err
		}
	}
	if cfg.VsockDir != "" {
		if err := os.MkdirAll(filepath.Join(root, cfg.VsockDir), 0o755); err != nil {
			return fmt.Errorf("make %s: %w", cfg.VsockDir, err)
		}
	}
	cmdline := filepath.Join(cfg.Scratch, "cmdline")
	target := filepath.Join(root, "proc", "cmdline")
	if err := unix.Mount(cmdline, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the command line over /proc/cmdline: %w", err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("make /proc/cmdline read-only: %w", err)
	}
	return nil
}

// bindDrive attaches the drive's backing file, the detached mount the fake
// gave (read-only already for a read-only drive), at its device path in
// the guest's /dev (a regular file there, not a block device).
func bindDrive(root string, d simDrive) error {
	target := filepath.Join(root, d.Dev)
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		return fmt.Errorf("make %s: %w", d.Dev, err)
	}
	if d.Tree < stageTreeFD {
		return fmt.Errorf("drive %s: no mount of %s from the fake", d.Dev, d.Path)
	}
	defer unix.Close(d.Tree)
	if err := unix.MoveMount(d.Tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind drive %s at %s: %w", d.Path, d.Dev, err)
	}
	return nil
}

// device is a character device node made in the guest's /dev.
type device struct {
	name         string
	major, minor uint32
	mode         uint32
}

// guestDevices is the minimal set of nodes a devtmpfs gives an init: the
// memory devices and the controlling terminal. /dev/console is a link to
// init's stdout, the serial console (see doc.go).
var guestDevices = []device{
	{"null", 1, 3, 0o666}, {"zero", 1, 5, 0o666}, {"full", 1, 7, 0o666},
	{"random", 1, 8, 0o666}, {"urandom", 1, 9, 0o666}, {"tty", 5, 0, 0o666},
}

// makeDevices fills the guest's /dev tmpfs at dir.
func makeDevices(dir string) error {
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, d := range guestDevices {
		p := filepath.Join(dir, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|d.mode, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("make /dev/%s: %w", d.name, err)
		}
	}
	links := [][2]string{
		{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
		// The console is the serial port, which is init's stdout.
		{"/proc/1/fd/1", "console"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			return fmt.Errorf("make /dev/%s: %w", l[1], err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("make /dev/%s: %w", d, err)
		}
	}
	return nil
}

// janitorTimeout bounds the janitor's wait for the guest's processes to
// end and its cgroup to go. Longer than the fake's own (simTimeout): the
// janitor works in the background, and on a loaded host a guest's end (its
// root file system written out as its mount namespace goes) can take a
// while.
const janitorTimeout = 30 * time.Second

// runJanitor is the janitor process: it waits until the fake closes its
// end of the pipe on descriptor 3 (it ends or is killed), then kills what is
// left in the guest's cgroup and removes the cgroup.
func runJanitor(args []string) int {
	if len(args) != 1 || !strings.HasPrefix(args[0], "/") {
		fmt.Fprintln(os.Stderr, "fake-firecracker: janitor: want one cgroup directory")
		return ExitError
	}
	p := os.NewFile(3, "janitor-pipe")
	_ = readAllString(p)
	cg := &simCgroup{dir: args[0]}
	if err := cg.destroy(janitorTimeout); err != nil {
		fmt.Fprintf(os.Stderr, "fake-firecracker: janitor: %v\n", err)
		return ExitError
	}
	return ExitOK
}
