package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/internal/vmmproc"
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
	// CgroupDirs are the cgroup directories the jailer creates for the
	// VMM when it is given cgroup settings: <ParentCgroup>/<ID> in the
	// unified hierarchy (v2), or in each controller's hierarchy that a
	// setting names (v1). Empty without settings: the jailer then makes
	// none.
	CgroupDirs []string
	// grants are the ACL entries staging gave the jail's user on the
	// caller's writable files, revoked when the jail is removed. Shared by
	// the copies of a layout.
	grants *aclGrants
	// sharedDir is JailerConfig.SharedDir: its copies are released when
	// the jail is removed.
	sharedDir string
}

// aclGrants are the files whose ACL gives the jail's uid access.
type aclGrants struct {
	mu    sync.Mutex // guards paths
	paths []string
}

func (g *aclGrants) add(path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paths = append(g.paths, path)
}

// revoke removes the entries of uid from every granted file.
func (g *aclGrants) revoke(uid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for _, p := range g.paths {
		errs = append(errs, kunix.RevokeUserACL(p, uid))
	}
	g.paths = nil
	return errors.Join(errs...)
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
	l.CgroupDirs = jailCgroupDirs(c)
	l.grants = &aclGrants{}
	if j != nil {
		l.sharedDir = j.SharedDir
	}
	return l
}

// jailCgroupDirs are the cgroup directories the jailer makes for c's VMM
// (see jailLayout.CgroupDirs).
func jailCgroupDirs(c *Config) []string {
	j := c.Jailer
	if j == nil || len(j.Cgroups) == 0 {
		return nil
	}
	parent := j.ParentCgroup
	if parent == "" {
		parent = filepath.Base(c.Firecracker)
	}
	if j.CgroupVersion != 1 {
		return []string{filepath.Join(cgroupRoot, parent, c.ID)}
	}
	var dirs []string
	for _, kv := range j.Cgroups {
		ctrl, _, _ := strings.Cut(kv, ".")
		d := filepath.Join(cgroupRoot, ctrl, parent, c.ID)
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// HostCgroupVersion is the cgroup version the jailer should use on this
// host: 2 when the unified hierarchy is mounted at /sys/fs/cgroup with its
// controllers, else 1 (a legacy or hybrid host).
func HostCgroupVersion() int {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return 2
	}
	return 1
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
	if j.ParentCgroup != "" {
		args = append(args, "--parent-cgroup", j.ParentCgroup)
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
		err := errors.Join(l.grants.revoke(j.UID), removeJail(l))
		if l.sharedDir != "" {
			err = errors.Join(err, vmmproc.ReleaseShared(l.sharedDir, j.UID))
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

// removeJail removes what the jailer and stageJail made for l: the jail's
// tree and the VMM's cgroups (which must be empty: the VMM has exited).
// What is not there is not an error.
func removeJail(l jailLayout) error {
	err := os.RemoveAll(l.InstanceDir)
	for _, d := range l.CgroupDirs {
		if rerr := os.Remove(d); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// CleanJail removes what running c's VMM under the jailer may have left
// behind when whatever ran it could not clean up (it was killed): the
// jail's tree, the VMM's cgroups and the ACL entries of the jail's uid on
// c's writable drives. It must only be called once that VMM has exited.
// Nothing there is fine; c without a jailer is a no-op.
func CleanJail(c Config) error {
	if c.Jailer == nil {
		return nil
	}
	c = c.withDefaults()
	if !vmIDRe.MatchString(c.ID) {
		return fmt.Errorf("clean jail: %w", &ConfigError{Field: "id", Value: strconv.Quote(c.ID), Problem: "not a VMM ID"})
	}
	l := newJailLayout(&c)
	var errs []error
	if c.Jailer.UID != 0 {
		for _, d := range c.Drives {
			if !d.ReadOnly && d.Path != "" {
				errs = append(errs, kunix.RevokeUserACL(d.Path, c.Jailer.UID))
			}
		}
	}
	errs = append(errs, removeJail(l))
	if l.sharedDir != "" {
		errs = append(errs, vmmproc.ReleaseShared(l.sharedDir, c.Jailer.UID))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean jail %s: %w", l.InstanceDir, err)
	}
	return nil
}

// JailSockets are the host paths of the API socket and the vsock socket
// (empty without a vsock device) of c's VMM, which must have a jailer:
// both are inside its jail.
func JailSockets(c Config) (api, vsock string) {
	c = c.withDefaults()
	l := newJailLayout(&c)
	return l.SocketPathHost, l.VsockPathHost
}

// JailDirs are the jail's directory on the host (<ChrootBase>/<exec
// name>/<ID>) and the VMM's cgroup directories for c, which must have a
// jailer; for audits of what is left.
func JailDirs(c Config) (instance string, cgroups []string) {
	c = c.withDefaults()
	l := newJailLayout(&c)
	return l.InstanceDir, l.CgroupDirs
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
				Fix:     "keep the drive on the chroot base's filesystem, or run without the jailer (--no-jailer)",
			})
		}
	} else if writable {
		// The guest's writes must reach the caller's file, so it is used
		// in place: hard-linked, with an ACL entry giving the jail's uid
		// read and write, revoked when the jail is removed. Its owner,
		// group and mode bits stay as they are.
		if err := os.Link(src, dst); err != nil {
			if errors.Is(err, syscall.EXDEV) {
				return "", fmt.Errorf("stage %q in jail: %w", src, &ConfigError{
					Field:   "jailer.chroot_base",
					Value:   strconv.Quote(filepath.Dir(l.InstanceDir)),
					Problem: "on another filesystem than the writable file " + strconv.Quote(src),
					Fix:     "keep the drive on the chroot base's filesystem, or run without the jailer (--no-jailer)",
				})
			}
			return "", fmt.Errorf("stage %q in jail: %w", src, err)
		}
		if err := kunix.GrantUserACL(src, uid, kunix.ACLRead|kunix.ACLWrite); err != nil {
			return "", fmt.Errorf("stage %q in jail: %w", src, &ConfigError{
				Field: "jailer.uid", Value: strconv.Itoa(uid),
				Problem: fmt.Sprintf("the writable file %q cannot be written by the jail's uid %d, and an ACL entry for it could not be added (%v)", src, uid, err),
				Fix:     fmt.Sprintf("give that user access yourself (setfacl -m u:%d:rw), or put the file on a filesystem with POSIX ACLs; kindling never changes the owner of your files", uid),
			})
		}
		if l.grants != nil {
			l.grants.add(src)
		}
		return name, nil
	}
	if l.sharedDir != "" {
		if _, err := vmmproc.StageShared(l.sharedDir, src, dst, uid); err == nil {
			return name, nil
		}
		// No ACLs there, or too many entries on the copy: a copy of its
		// own, as without a shared directory.
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

// WaitJailCgroupsGone removes the cgroups of c's jailed VMM that are still
// busy (the threads of a VMM just killed or ended may not all have left
// yet), trying until they are gone or timeout passes; it reports whether
// they are all gone. CleanJail fails on a busy cgroup; callers that have
// just seen the VMM end wait here and clean again.
func WaitJailCgroupsGone(c Config, timeout time.Duration) bool {
	_, cgs := JailDirs(c)
	return vmmproc.RemoveCgroups(cgs, timeout)
}

// JailCgroupHolders names the processes still in the cgroups of c's jailed
// VMM, for an error that says what holds them.
func JailCgroupHolders(c Config) string {
	_, cgs := JailDirs(c)
	return vmmproc.CgroupHolders(cgs)
}
