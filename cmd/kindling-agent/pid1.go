package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultHostname is the guest's hostname when the kernel command line and
// the kernel name none.
const defaultHostname = "kindling"

// mountSpec is one file system PID 1 mounts.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// guestMounts are the file systems a guest needs, in order.
var guestMounts = []mountSpec{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"run", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
}

// mounted returns the mount points listed in /proc/self/mountinfo.
func mounted() map[string]bool {
	m := map[string]bool{}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			m[f[4]] = true
		}
	}
	return m
}

// mountAll mounts what is not mounted yet. A failure is logged, not fatal:
// a guest with a read-only /tmp is still worth serving.
func mountAll(log *slog.Logger) {
	have := mounted()
	for _, m := range guestMounts {
		if have[m.target] {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			log.Warn("mount", "target", m.target, "err", err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			log.Warn("mount", "target", m.target, "type", m.fstype, "err", err)
			continue
		}
		if m.target == "/proc" {
			have = mounted()
		}
	}
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			_ = os.Symlink(target, link)
		}
	}
}

// setHostname sets the hostname from the command line, or the default if
// the kernel has none yet.
func setHostname(name string, log *slog.Logger) {
	if name == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err == nil {
			cur := unix.ByteSliceToString(u.Nodename[:])
			if cur != "" && cur != "(none)" {
				return
			}
		}
		name = defaultHostname
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		log.Warn("set hostname", "hostname", name, "err", err)
	}
}

// loopbackUp brings up lo.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// powerOff ends every process, syncs the disks and powers the machine off.
// It does not return unless the kernel refuses.
func powerOff(log *slog.Logger) {
	log.Info("powering off")
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && othersAlive() {
		time.Sleep(20 * time.Millisecond)
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		log.Error("power off", "err", err)
	}
}

// othersAlive reports whether any process but this one is still running
// (reaped or not, zombies do not count).
func othersAlive() bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	self := os.Getpid()
	for _, e := range entries {
		pid := 0
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == self || pid <= 0 {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Kernel threads have an empty command line and a parent of 2 (or
		// are 2): not ours to wait for.
		if cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); len(cmd) == 0 {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] != 'Z' {
			return true
		}
	}
	return false
}

// ignoreCtrlAltDel makes the kernel send SIGINT to PID 1 on Ctrl-Alt-Del
// (Firecracker's SendCtrlAltDel) instead of rebooting at once.
func ignoreCtrlAltDel() {
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
}

// shutdownSignals are the signals that ask PID 1 to power off.
var shutdownSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGPWR}
