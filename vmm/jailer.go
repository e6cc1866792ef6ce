package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Names of the files Firecracker uses inside the jail, seen from the jail's
// root. The jailer makes <chroot>/root the jailed Firecracker's "/".
const (
	jailSocket  = "/firecracker.sock"
	jailLog     = "/firecracker.log"
	jailMetrics = "/firecracker.metrics"
	jailKernel  = "/kernel"
	jailInitrd  = "/initrd"
	// jailDrivePrefix + drive ID names a drive's file in the jail.
	jailDrivePrefix = "/drive-"
)

// jailLayout is where a jailed Firecracker's files are, on the host and in
// the jail. It follows the jailer of Firecracker v1.7: the jail is
// <ChrootBase>/<file name of the firecracker executable>/<ID>/root, the jailer
// copies the executable there, makes the directory Firecracker's "/", and
// removes nothing when Firecracker exits.
type jailLayout struct {
	// InstanceDir is <ChrootBase>/<exec name>/<ID>: the tree to remove.
	InstanceDir string
	// ChrootDir is InstanceDir/root, the jail's "/" on the host.
	ChrootDir string
	// RootDir is ChrootDir under another name, as the jailer docs call it.
	RootDir string
	// ExecName is the file name of the firecracker executable.
	ExecName string
	// SocketPathHost is the API socket as the host sees it: connect here.
	SocketPathHost string
	// SocketPathInJail is the API socket as Firecracker sees it.
	SocketPathInJail string
	// LogPathHost and LogPathInJail are Firecracker's log file.
	LogPathHost, LogPathInJail string
	// MetricsPathHost and MetricsPathInJail are its metrics file; empty
	// when Config.MetricsPath is.
	MetricsPathHost, MetricsPathInJail string
	// VsockPathHost and VsockPathInJail are the vsock device's Unix
	// socket; empty without a vsock device. Firecracker creates it in the
	// jail under the file name of Config.Vsock.Path.
	VsockPathHost, VsockPathInJail string
	// PIDFile is where the jailer writes Firecracker's PID when it starts
	// it in a new PID namespace (<ChrootDir>/<ExecName>.pid).
	PIDFile string
	// CgroupDir is the cgroup v2 directory the jailer creates for the VMM
	// when it is given cgroup settings; empty otherwise (it then creates
	// none, or with v1 one per controller).
	CgroupDir string
}

// cgroupRoot is where the unified cgroup v2 hierarchy is mounted.
const cgroupRoot = "/sys/fs/cgroup"

// newJailLayout computes the jail of c, which must have defaults applied (a
// ChrootBase, a valid ID). It touches nothing.
func newJailLayout(c *Config) jailLayout {
	j := c.Jailer
	base := defaultChrootBase
	if j != nil && j.ChrootBase != "" {
		base = j.ChrootBase
	}
	exec := filepath.Base(c.Firecracker)
	inst := filepath.Join(base, exec, c.ID)
	root := filepath.Join(inst, "root")
	l := jailLayout{
		InstanceDir:      inst,
		ChrootDir:        root,
		RootDir:          root,
		ExecName:         exec,
		SocketPathInJail: jailSocket,
		SocketPathHost:   root + jailSocket,
		LogPathInJail:    jailLog,
		LogPathHost:      root + jailLog,
		PIDFile:          filepath.Join(root, exec+".pid"),
	}
	if c.MetricsPath != "" {
		l.MetricsPathInJail = jailMetrics
		l.MetricsPathHost = root + jailMetrics
	}
	if c.Vsock != nil && c.Vsock.Path != "" {
		l.VsockPathInJail = "/" + filepath.Base(c.Vsock.Path)
		l.VsockPathHost = root + l.VsockPathInJail
	}
	if j != nil && len(j.Cgroups) > 0 && j.CgroupVersion != 1 {
		l.CgroupDir = filepath.Join(cgroupRoot, exec, c.ID)
	}
	return l
}

// jailerArgs returns the jailer's arguments (without the jailer's own path)
// for running c's Firecracker in l: the jailer's flags, then "--" and
// Firecracker's flags with in-jail paths. The jailer passes --id itself.
func jailerArgs(c *Config, l jailLayout) []string {
	j := c.Jailer
	cg := j.CgroupVersion
	if cg == 0 {
		cg = defaultCgroupVersion
	}
	base := j.ChrootBase
	if base == "" {
		base = defaultChrootBase
	}
	args := []string{
		"--id", c.ID,
		"--exec-file", c.Firecracker,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", base,
		"--cgroup-version", strconv.Itoa(cg),
	}
	if j.NetNS != "" {
		args = append(args, "--netns", j.NetNS)
	}
	for _, kv := range j.Cgroups {
		args = append(args, "--cgroup", kv)
	}
	if j.NewPIDNS {
		args = append(args, "--new-pid-ns")
	}
	args = append(args, "--", "--api-sock", l.SocketPathInJail, "--log-path", l.LogPathInJail)
	if c.LogLevel != "" {
		args = append(args, "--level", c.LogLevel)
	}
	if l.MetricsPathInJail != "" {
		args = append(args, "--metrics-path", l.MetricsPathInJail)
	}
	return args
}

// stageJail prepares l for c before the jailer runs: it creates the jail's
// root, puts the kernel, the initrd and every drive's file in it, pre-creates
// the log and metrics files (Firecracker opens them but does not create
// them), and gives all of them to the jail's UID and GID. It returns a copy of
// c whose paths are the in-jail ones, for the API requests (but whose
// SocketPath is the host's, for the client), and a cleanup
// that removes the whole <ChrootBase>/<exec>/<ID> tree (and the VMM's cgroup
// v2 directory, once empty), which the jailer never does.
//
// The caller's files never change owner (see stageFile): those the jail's
// user can already use are hard-linked, other read-only ones copied, other
// writable ones refused. Across filesystems read-only files are copied; a
// writable drive is refused, since a copy would not receive the guest's
// writes: put ChrootBase on the drive's filesystem.
//
// On error stageJail removes what it created.
func stageJail(c *Config, l jailLayout) (jailed Config, cleanup func() error, err error) {
	j := c.Jailer
	if j == nil {
		return Config{}, nil, fmt.Errorf("stage jail: %w", &ConfigError{Field: "jailer", Problem: "not set"})
	}
	if _, err := os.Lstat(l.InstanceDir); err == nil {
		return Config{}, nil, fmt.Errorf("stage jail %q: %w", l.InstanceDir, os.ErrExist)
	}
	remove := func() error {
		err := os.RemoveAll(l.InstanceDir)
		if l.CgroupDir != "" {
			if rerr := os.Remove(l.CgroupDir); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
		if err != nil {
			return fmt.Errorf("remove jail: %w", err)
		}
		return nil
	}
	defer func() {
		if err != nil {
			_ = remove() // best effort; the staging error is the one to report
		}
	}()
	if err := os.MkdirAll(l.ChrootDir, 0o755); err != nil {
		return Config{}, nil, fmt.Errorf("stage jail: %w", err)
	}

	jailed = *c
	jailed.SocketPath = l.SocketPathHost
	if jailed.Kernel, err = l.stageFile(c.Kernel, jailKernel, j.UID, j.GID, false); err != nil {
		return Config{}, nil, err
	}
	if c.Initrd != "" {
		if jailed.Initrd, err = l.stageFile(c.Initrd, jailInitrd, j.UID, j.GID, false); err != nil {
			return Config{}, nil, err
		}
	}
	if c.Drives != nil {
		jailed.Drives = make([]Drive, len(c.Drives))
		for i, d := range c.Drives {
			if d.Path, err = l.stageFile(d.Path, jailDrivePrefix+d.ID, j.UID, j.GID, !d.ReadOnly); err != nil {
				return Config{}, nil, err
			}
			jailed.Drives[i] = d
		}
	}
	if jailed.LogPath, err = l.createFile(l.LogPathInJail, j.UID, j.GID); err != nil {
		return Config{}, nil, err
	}
	if c.MetricsPath != "" {
		if jailed.MetricsPath, err = l.createFile(l.MetricsPathInJail, j.UID, j.GID); err != nil {
			return Config{}, nil, err
		}
	}
	if c.Vsock != nil {
		v := *c.Vsock
		v.Path = l.VsockPathInJail
		jailed.Vsock = &v
	}
	return jailed, remove, nil
}

// stageFile puts the host file src at name (an absolute in-jail path) in the
// jail, for the jail's uid:gid, and returns name. The caller's file never
// changes owner or mode. When the jail's user can already use it (read it,
// and write it when writable: uid 0, its owner, its group or others by the
// file's mode) it is hard-linked. Otherwise a read-only file is copied
// (reflinked where the filesystem can) and the copy given to uid:gid; a
// writable one is refused with the fix, since a copy would not receive the
// guest's writes and changing its owner would take it from its user. Across
// filesystems a read-only file is copied and a writable one refused. The
// machine uses it also for drives attached after boot.
func (l jailLayout) stageFile(src, name string, uid, gid int, writable bool) (string, error) {
	dst := filepath.Join(l.ChrootDir, name)
	fi, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("stage %q in jail: %w", src, err)
	}
	if canUse(fi, uid, gid, writable) {
		err := os.Link(src, dst)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, syscall.EXDEV) {
			return "", fmt.Errorf("stage %q in jail: %w", src, err)
		}
		if writable {
			return "", fmt.Errorf("stage %q in jail: %w", src, &ConfigError{
				Field:   "jailer.chroot_base",
				Value:   strconv.Quote(filepath.Dir(l.InstanceDir)),
				Problem: "on another filesystem than the writable file " + strconv.Quote(src),
				Fix:     "put the chroot base on the drive's filesystem",
			})
		}
	} else if writable {
		return "", fmt.Errorf("stage %q in jail: %w", src, &ConfigError{
			Field: "jailer.uid", Value: strconv.Itoa(uid),
			Problem: fmt.Sprintf("the writable file %q cannot be written by the jail's uid %d (gid %d)", src, uid, gid),
			Fix:     fmt.Sprintf("give that user access to it yourself (chown %d:%d, or an ACL); kindling never changes the owner of your files", uid, gid),
		})
	}
	if err := copyFile(src, dst); err != nil {
		return "", fmt.Errorf("stage %q in jail: %w", src, err)
	}
	if err := os.Chown(dst, uid, gid); err != nil {
		return "", fmt.Errorf("stage %q in jail: %w", src, err)
	}
	return name, nil
}

// canUse reports whether uid:gid may read the file fi (and write it, with
// writable) by its owner, group and mode. Supplementary groups and ACLs are
// not considered: a file they would open is copied (or, writable, refused)
// rather than guessed at.
func canUse(fi os.FileInfo, uid, gid int, writable bool) bool {
	if uid == 0 {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	need := os.FileMode(0o4)
	if writable {
		need |= 0o2
	}
	perm := fi.Mode().Perm()
	switch {
	case int(st.Uid) == uid:
		return perm>>6&need == need
	case int(st.Gid) == gid:
		return perm>>3&need == need
	}
	return perm&need == need
}

// createFile creates the empty file name (an in-jail path) in the jail,
// owned by uid:gid, and returns name.
func (l jailLayout) createFile(name string, uid, gid int) (string, error) {
	dst := filepath.Join(l.ChrootDir, name)
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %q in jail: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("create %q in jail: %w", name, err)
	}
	if err := os.Chown(dst, uid, gid); err != nil {
		return "", fmt.Errorf("create %q in jail: %w", name, err)
	}
	return name, nil
}

// copyFile copies the regular file src to the new file dst, keeping its
// permission bits: a reflink where the filesystem shares blocks (FICLONE),
// else a copy.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if kunix.CloneFile(out, in) == nil {
		return nil
	}
	_, err = io.Copy(out, in)
	return err
}
