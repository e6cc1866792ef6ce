package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readyFD is the init's end of the keeper's readiness pipe.
const readyFD = 3

// initContainer runs as PID 1 of the container's fresh namespaces: it
// mounts the root filesystem and the standard file systems, pivots into
// the root and executes the command. Everything it mounts lives in the
// container's mount namespace only, and goes when its last process ends
// (a loop device, set to clear itself, with it).
func initContainer(spec Spec) error {
	// fd 3 is the keeper's readiness pipe: closed by the exec below.
	unix.CloseOnExec(readyFD)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	dir := filepath.Join(StateDir, spec.ID)
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := mountRootfs(spec.Rootfs, root, dir); err != nil {
		return err
	}
	if err := mountStandard(root); err != nil {
		return err
	}
	for _, m := range spec.Mounts {
		mount := mountTmpfs
		if m.Type == "bind" {
			mount = mountBind
		}
		if err := mount(root, m); err != nil {
			return err
		}
	}
	if spec.Rootfs.ReadOnly {
		// Read-only once its mount points exist (made above if the image
		// lacked them): the flag of this mount, not of the device.
		if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make the rootfs read-only: %w", err)
		}
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	if err := pivot(root); err != nil {
		return err
	}
	if err := setRlimits(spec.Rlimits); err != nil {
		return err
	}
	path, err := lookPath(spec.Args[0], spec.Env)
	if err != nil {
		return err
	}
	if err := unix.Chdir(cwdOf(spec)); err != nil {
		return fmt.Errorf("working directory %s: %w", cwdOf(spec), err)
	}
	if err := syscall.Setgroups(intsOf(spec.AdditionalGIDs)); err != nil {
		return fmt.Errorf("set groups: %w", err)
	}
	if err := syscall.Setresgid(int(spec.GID), int(spec.GID), int(spec.GID)); err != nil {
		return fmt.Errorf("set gid %d: %w", spec.GID, err)
	}
	if err := syscall.Setresuid(int(spec.UID), int(spec.UID), int(spec.UID)); err != nil {
		return fmt.Errorf("set uid %d: %w", spec.UID, err)
	}
	if err := syscall.Exec(path, spec.Args, spec.Env); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

func intsOf(v []uint32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// mountRootfs mounts the container's root filesystem at root. A regular
// file (a drive's backing file in a simulated guest) is attached to a loop
// device first, made in a private /dev under dir.
//
// It is mounted read-write: a read-only rootfs is made so once the mount
// points are in place (initContainer).
func mountRootfs(r Rootfs, root, dir string) error {
	if r.Dir != "" {
		if err := unix.Mount(r.Dir, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind rootfs %s: %w", r.Dir, err)
		}
		return nil
	}
	fi, err := os.Stat(r.Device)
	if err != nil {
		return fmt.Errorf("rootfs device: %w", err)
	}
	dev := r.Device
	if fi.Mode().IsRegular() {
		var loop *os.File
		devDir := filepath.Join(dir, "dev")
		if err := os.MkdirAll(devDir, 0o700); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", devDir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=700"); err != nil {
			return fmt.Errorf("mount a private /dev for the loop device: %w", err)
		}
		if loop, err = attachLoop(r.Device, false, devDir); err != nil {
			return err
		}
		// Autoclear detaches the device at its last close: keep it open
		// until the mount holds it.
		defer loop.Close()
		dev = loop.Name()
	} else if fi.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("rootfs device %s: not a block device or a file", r.Device)
	}
	if err := unix.Mount(dev, root, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount rootfs %s: %w", r.Device, err)
	}
	return nil
}

// attachLoop binds file to a free loop device, set to detach itself once
// unmounted, and returns the device, open (a node made in devDir).
func attachLoop(file string, ro bool, devDir string) (*os.File, error) {
	ctlPath := filepath.Join(devDir, "loop-control")
	if err := unix.Mknod(ctlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 237))); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("make loop-control: %w", err)
	}
	ctl, err := os.OpenFile(ctlPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open loop-control: %w", err)
	}
	defer ctl.Close()
	mode := os.O_RDWR
	var lflags uint32 = unix.LO_FLAGS_AUTOCLEAR
	if ro {
		mode = os.O_RDONLY
		lflags |= unix.LO_FLAGS_READ_ONLY
	}
	back, err := os.OpenFile(file, mode, 0)
	if err != nil {
		return nil, fmt.Errorf("open rootfs image: %w", err)
	}
	defer back.Close()
	// Another attacher may take the free device first: try again.
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		devPath := filepath.Join(devDir, fmt.Sprintf("loop%d", n))
		if err := unix.Mknod(devPath, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("make %s: %w", devPath, err)
		}
		lf, err := os.OpenFile(devPath, mode, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", devPath, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd()), Info: unix.LoopInfo64{Flags: lflags}}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			return lf, nil
		}
		lf.Close()
		if !errors.Is(err, unix.EBUSY) || attempt == 20 {
			return nil, fmt.Errorf("attach %s to %s: %w", file, devPath, err)
		}
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
}

// mountStandard gives the container /proc (of its PID namespace), /dev (a
// tmpfs with the usual nodes bound from the guest's, a new devpts
// instance, /dev/shm), /sys (the guest's, read-only) and /dev/mqueue.
func mountStandard(root string) error {
	at := func(p string) string { return filepath.Join(root, p) }
	dirs := []string{"proc", "dev", "sys"}
	for _, d := range dirs {
		if err := os.MkdirAll(at(d), 0o755); err != nil {
			return fmt.Errorf("make /%s in the rootfs: %w", d, err)
		}
	}
	steps := []struct {
		what string
		fn   func() error
	}{
		{"/proc", func() error {
			return unix.Mount("proc", at("proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"/dev", func() error {
			return unix.Mount("tmpfs", at("dev"), "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k")
		}},
		{"/dev nodes", func() error {
			for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
				f, err := os.OpenFile(at("dev/"+n), os.O_CREATE|os.O_WRONLY, 0o666)
				if err != nil {
					return err
				}
				f.Close()
				if err := unix.Mount("/dev/"+n, at("dev/"+n), "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("bind /dev/%s: %w", n, err)
				}
			}
			links := map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
				"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
			for name, target := range links {
				if err := os.Symlink(target, at("dev/"+name)); err != nil {
					return err
				}
			}
			for _, d := range []string{"pts", "shm", "mqueue"} {
				if err := os.Mkdir(at("dev/"+d), 0o755); err != nil {
					return err
				}
			}
			return nil
		}},
		{"/dev/pts", func() error {
			return unix.Mount("devpts", at("dev/pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
		}},
		{"/dev/shm", func() error {
			return unix.Mount("shm", at("dev/shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k")
		}},
		{"/dev/mqueue", func() error {
			return unix.Mount("mqueue", at("dev/mqueue"), "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"/sys", func() error {
			if err := unix.Mount("/sys", at("sys"), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return err
			}
			return unix.Mount("", at("sys"), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("mount %s in the container: %w", s.what, err)
		}
	}
	return nil
}

// mountTmpfs mounts one of the spec's tmpfs mounts; options that are mount
// flags become flags, the rest is the file system's data.
func mountTmpfs(root string, m Mount) error {
	dst := filepath.Join(root, filepath.Clean(m.Destination))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	var flags uintptr
	var data []string
	for _, o := range m.Options {
		switch o {
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "ro":
			flags |= unix.MS_RDONLY
		case "strictatime":
			flags |= unix.MS_STRICTATIME
		case "rw", "suid", "dev", "exec", "relatime":
		default:
			data = append(data, o)
		}
	}
	if err := unix.Mount("tmpfs", dst, "tmpfs", flags, strings.Join(data, ",")); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", m.Destination, err)
	}
	return nil
}

// mountBind bind-mounts the guest's m.Source (a file or a directory) at
// m.Destination in the container, making the mount point if the image
// lacks it, read-only with "ro".
func mountBind(root string, m Mount) error {
	dst := filepath.Join(root, filepath.Clean(m.Destination))
	fi, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
		var f *os.File
		if f, err = os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("bind mount %s: mount point: %w", m.Destination, err)
	}
	if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", m.Source, m.Destination, err)
	}
	for _, o := range m.Options {
		if o == "ro" {
			if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("make %s read-only: %w", m.Destination, err)
			}
		}
	}
	return nil
}

// pivot makes root the root of this mount namespace and drops the old one.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the guest's root: %w", err)
	}
	return unix.Chdir("/")
}
