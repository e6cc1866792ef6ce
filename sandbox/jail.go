package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/internal/vmmproc"
	"github.com/kindling-vm/kindling/vmm"
)

// The jailer policy. Run as root, kindling runs every sandbox's Firecracker
// under Firecracker's jailer: in a chroot of its own, in a cgroup of its
// own, as a uid and gid of its own taken from a range no one else uses.
// Without a jailer found it refuses to start rather than run Firecracker
// as root with the whole host in view: a security-minded user who lost the
// jailer (a PATH change, an uninstalled release) must be told, not quietly
// given less isolation. Opting out is explicit: Spec.NoJailer (--no-jailer,
// no_jailer = true), or $KINDLING_NO_JAILER=1 for test rigs and hosts where
// the jailer cannot work. Run as another user, kindling runs Firecracker
// directly (the jailer needs root), unless a jailer is named.

// Environment variables of the jailer policy.
const (
	// EnvNoJailer, set to 1 (or true), runs sandboxes without the jailer
	// even as root, as Spec.NoJailer does.
	EnvNoJailer = "KINDLING_NO_JAILER"
	// EnvJailIDs is the range of uids (and gids, the same numbers) the
	// jailed sandboxes get, FIRST-LAST (default DefaultJailIDs).
	EnvJailIDs = "KINDLING_JAIL_IDS"
)

// DefaultJailIDs is the default range of jail uids and gids: 65536 ids
// starting at 0x60000000, a 64k-aligned block far above the ids of users
// and of the usual subordinate-id ranges (/etc/subuid starts at 100000).
const DefaultJailIDs = "1610612736-1610678271"

// jailChrootBase is where the jails of every state root are, each root's
// under a directory named from its path (jailRootTag).
const jailChrootBase = "/srv/jailer"

// ErrNoJailer: running as root, no jailer was found and no opt-out given.
// It matches ErrInvalid.
var ErrNoJailer = errdefs.New(errdefs.ErrInvalid, "no jailer executable found")

// jailRec is what a jailed sandbox holds of its jail: its uid and gid,
// allocated from the jail-id range for the sandbox's life.
type jailRec struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// noJailerEnv reports whether $KINDLING_NO_JAILER opts out of the jailer.
func noJailerEnv() bool {
	v, _ := strconv.ParseBool(os.Getenv(EnvNoJailer))
	return v
}

// resolveJailer applies the jailer policy to spec: it fills in the jailer
// found when the policy wants one, and checks the cgroup limits, which
// need it. Nothing is spawned.
func resolveJailer(spec *Spec) error {
	if spec.NoJailer && spec.Jailer != "" {
		return fmt.Errorf("%w: both a jailer (%s) and no jailer are asked for: leave out one of them", ErrInvalidSpec, spec.Jailer)
	}
	if spec.Jailer == "" && !spec.NoJailer && os.Geteuid() == 0 && !noJailerEnv() {
		p, err := install.Find(install.Jailer, "")
		if err != nil {
			return fmt.Errorf("%w: %w: as root, kindling runs Firecracker under its jailer: run 'kindling install firecracker' (it installs the jailer), give --jailer PATH or set %s, or run without it with --no-jailer",
				ErrInvalidSpec, ErrNoJailer, install.EnvJailer)
		}
		spec.Jailer = p
	}
	return checkLimits(*spec)
}

// checkLimits checks the spec's cgroup limits.
func checkLimits(s Spec) error {
	if s.CPULimit == 0 && s.MemoryLimit == "" {
		return nil
	}
	if s.Jailer == "" {
		return fmt.Errorf("%w: cpu and memory limits are set through the jailer's cgroup, and this sandbox runs without the jailer: leave out the limits, or run it under the jailer (as root, without --no-jailer)", ErrInvalidSpec)
	}
	if s.CPULimit < 0 || s.CPULimit > 4096 || math.IsNaN(s.CPULimit) || (s.CPULimit > 0 && cpuQuota(s.CPULimit) < 1000) {
		return fmt.Errorf("%w: cpu limit %g: give a number of CPUs from 0.01 (1.5 is one and a half)", ErrInvalidSpec, s.CPULimit)
	}
	if s.MemoryLimit != "" {
		lim, err := ParseMemory(s.MemoryLimit)
		if err != nil {
			return fmt.Errorf("%w: memory limit: %w", ErrInvalidSpec, err)
		}
		guest := s.MemoryMiB
		if guest == 0 {
			guest = 128 // the driver's default
		}
		if lim < guest+vmmOverheadMiB {
			return fmt.Errorf("%w: memory limit %d MiB leaves no room for the guest's %d MiB and the VMM's own: give at least %dM",
				ErrInvalidSpec, lim, guest, guest+vmmOverheadMiB)
		}
	}
	return nil
}

// vmmOverheadMiB is what a memory limit must allow the VMM beyond the
// guest's memory (Firecracker's own RSS is 1–2 MiB, its page tables and
// buffers a few more).
const vmmOverheadMiB = 16

// cpuPeriod is the cgroup CPU period the limits are expressed in (µs).
const cpuPeriod = 100000

func cpuQuota(cpus float64) int64 { return int64(math.Round(cpus * cpuPeriod)) }

// cgroupSettings are the jailer's --cgroup settings for s's limits in
// cgroup version v.
func cgroupSettings(s Spec, v int) []string {
	var out []string
	if s.CPULimit > 0 {
		q := cpuQuota(s.CPULimit)
		if v == 1 {
			out = append(out, fmt.Sprintf("cpu.cfs_period_us=%d", cpuPeriod), fmt.Sprintf("cpu.cfs_quota_us=%d", q))
		} else {
			out = append(out, fmt.Sprintf("cpu.max=%d %d", q, cpuPeriod))
		}
	}
	if s.MemoryLimit != "" {
		if mib, err := ParseMemory(s.MemoryLimit); err == nil {
			b := strconv.FormatInt(int64(mib)<<20, 10)
			if v == 1 {
				out = append(out, "memory.limit_in_bytes="+b)
			} else {
				out = append(out, "memory.max="+b)
			}
		}
	}
	return out
}

// jailRootTag names a state root's jails and cgroups: "k" and 10 hex
// digits of its path's hash, so that sandboxes of one ID under two roots
// never share a jail or a cgroup, and a jailed VMM is found from the
// sandbox's directory alone.
func jailRootTag(root string) string {
	h := sha256.Sum256([]byte(root))
	return "k" + hex.EncodeToString(h[:5])
}

// jailerConfig is the driver's jailer configuration of the sandbox rec
// living in dir (<root>/<id>).
func jailerConfig(rec *record, dir string) *vmm.JailerConfig {
	s := rec.Spec
	root := filepath.Dir(dir)
	v := vmm.HostCgroupVersion()
	// The VMM always gets a cgroup of its own (pids.max=max when it has no
	// limits), by which it is found from the host (jailedVMMs).
	cg := cgroupSettings(s, v)
	if len(cg) == 0 {
		cg = []string{"pids.max=max"}
	}
	j := &vmm.JailerConfig{
		Path:          s.Jailer,
		NetNS:         s.NetNS,
		ChrootBase:    filepath.Join(jailChrootBase, jailRootTag(root)),
		ParentCgroup:  jailRootTag(root),
		CgroupVersion: v,
		Cgroups:       cg,
		SharedDir:     jailSharedDir(root),
	}
	if rec.Jail != nil {
		j.UID, j.GID = rec.Jail.UID, rec.Jail.GID
	}
	return j
}

// JailIDRegistry is where the jail uids of every state root on the host are
// allocated: a file <uid> per uid in use, holding the directory of the
// sandbox that has it, made and removed under the lock file .lock. It is
// host-wide, not under a state root, so that sandboxes of two state roots
// never share a uid (which would let one's escaped VMM signal or read the
// other's). It is on /run: after a reboot, when no VMM runs, it starts
// empty, and each sandbox claims its recorded uid again at its next start.
const JailIDRegistry = "/run/kindling-jail-ids"

const jailIDsLock = ".lock"

// idRange is a range of uids.
type idRange struct{ first, last int }

// jailIDRange is the configured range ($KINDLING_JAIL_IDS, else the
// default).
func jailIDRange() (idRange, error) {
	s := os.Getenv(EnvJailIDs)
	if s == "" {
		s = DefaultJailIDs
	}
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || first < 1 || last < first || last >= 1<<32-1 {
		return idRange{}, fmt.Errorf("%w: %s=%q: give a range of uids FIRST-LAST above 0, such as %s", ErrInvalidSpec, EnvJailIDs, s, DefaultJailIDs)
	}
	return idRange{first, last}, nil
}

// lockJailIDs makes the registry and takes its lock.
func lockJailIDs() (*store.FileLock, error) {
	if err := store.MkdirPrivate("jail uid registry", JailIDRegistry); err != nil {
		return nil, err
	}
	return store.LockFile(context.Background(), filepath.Join(JailIDRegistry, jailIDsLock), store.Exclusive)
}

// allocJailID gives the sandbox id of the state root root a uid (and the
// gid of the same number) of its own from the configured range: prefer
// (its recorded uid, or 0) when that is free, else one that no other
// sandbox on the host holds and that names no user or group of the host.
// An allocation whose sandbox directory is gone is taken back.
func allocJailID(root, id string, prefer int) (*jailRec, error) {
	rng, err := jailIDRange()
	if err != nil {
		return nil, err
	}
	lock, err := lockJailIDs()
	if err != nil {
		return nil, fmt.Errorf("allocate a jail uid: %w", err)
	}
	defer lock.Unlock()
	holder := filepath.Join(root, id)
	// free reports whether uid can be ours; mine, that it is already.
	check := func(uid int) (free, mine bool, err error) {
		b, err := store.ReadFile(filepath.Join(JailIDRegistry, strconv.Itoa(uid)), 4096)
		switch {
		case err == nil && string(b) == holder:
			return true, true, nil
		case err == nil:
			if _, serr := os.Lstat(string(b)); serr == nil {
				return false, false, nil
			}
		case !errors.Is(err, fs.ErrNotExist):
			return false, false, err
		}
		return !hostHasID(uid), false, nil
	}
	take := func(uid int) (*jailRec, error) {
		if err := store.WriteFileAtomic(JailIDRegistry, strconv.Itoa(uid), []byte(holder)); err != nil {
			return nil, fmt.Errorf("allocate a jail uid: %w", err)
		}
		return &jailRec{UID: uid, GID: uid}, nil
	}
	if prefer >= rng.first && prefer <= rng.last {
		free, mine, err := check(prefer)
		if err != nil {
			return nil, fmt.Errorf("allocate a jail uid: %w", err)
		}
		if mine {
			return &jailRec{UID: prefer, GID: prefer}, nil
		}
		if free {
			return take(prefer)
		}
	}
	size := rng.last - rng.first + 1
	h := sha256.Sum256([]byte(holder))
	start := int(uint64(h[0])<<24|uint64(h[1])<<16|uint64(h[2])<<8|uint64(h[3])) % size
	for i := range size {
		uid := rng.first + (start+i)%size
		free, mine, err := check(uid)
		if err != nil {
			return nil, fmt.Errorf("allocate a jail uid: %w", err)
		}
		if mine {
			return &jailRec{UID: uid, GID: uid}, nil
		}
		if free {
			return take(uid)
		}
	}
	return nil, fmt.Errorf("%w: all %d jail uids of %s=%d-%d are in use: remove sandboxes, or give a larger range", ErrInvalidSpec, size, EnvJailIDs, rng.first, rng.last)
}

// releaseJailID gives back the uid the sandbox id of root holds (j, or
// whichever it holds when j is nil), if any.
func releaseJailID(root, id string, j *jailRec) error {
	if _, err := os.Stat(JailIDRegistry); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lock, err := lockJailIDs()
	if err != nil {
		return fmt.Errorf("release the jail uid: %w", err)
	}
	defer lock.Unlock()
	holder := filepath.Join(root, id)
	var names []string
	if j != nil {
		names = append(names, strconv.Itoa(j.UID))
	} else if ents, err := os.ReadDir(JailIDRegistry); err == nil {
		for _, e := range ents {
			names = append(names, e.Name())
		}
	}
	for _, name := range names {
		if _, err := strconv.Atoi(name); err != nil {
			continue
		}
		p := filepath.Join(JailIDRegistry, name)
		if b, err := store.ReadFile(p, 4096); err == nil && string(b) == holder {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("release the jail uid: %w", err)
			}
		}
	}
	return nil
}

// JailIDsHeld lists the jail uids the sandboxes of root hold, by uid, with
// the sandbox's ID; for audits.
func JailIDsHeld(root string) (map[int]string, error) {
	ents, err := os.ReadDir(JailIDRegistry)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	held := map[int]string{}
	for _, e := range ents {
		uid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := store.ReadFile(filepath.Join(JailIDRegistry, e.Name()), 4096)
		if err != nil {
			continue // released meanwhile
		}
		if filepath.Dir(string(b)) == filepath.Clean(root) {
			held[uid] = filepath.Base(string(b))
		}
	}
	return held, nil
}

// JailLeftovers lists what the jails of sandbox id under root have left on
// the host: its chroot directories and its cgroups. Empty once the
// sandbox's VMM has ended and its jail was cleaned; for audits.
func JailLeftovers(root, id string) []string {
	tag := jailRootTag(root)
	vid := vmmID(id)
	var left []string
	execs, _ := os.ReadDir(filepath.Join(jailChrootBase, tag))
	for _, e := range execs {
		p := filepath.Join(jailChrootBase, tag, e.Name(), vid)
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p)
		}
	}
	for _, p := range cgroupCandidates(tag, vid) {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p)
		}
	}
	return left
}

// cgroupCandidates are the cgroup directories a jailed VMM of a root
// (tag) and VMM ID may have: in the unified hierarchy and under each v1
// controller's.
func cgroupCandidates(tag, vid string) []string {
	out := []string{filepath.Join("/sys/fs/cgroup", tag, vid)}
	ctrls, _ := os.ReadDir("/sys/fs/cgroup")
	for _, c := range ctrls {
		if c.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", c.Name(), tag, vid))
		}
	}
	return out
}

// cleanJail removes what the jail of the sandbox rec (in dir) may have left
// when its monitor could not clean up: its chroot, its cgroups and the ACL
// entries of its uid on its writable drives. The VMM must have ended.
func cleanJail(dir string, rec *record) error {
	if rec.Spec.Jailer == "" {
		return nil
	}
	cfg := vmmConfig(rec, dir)
	err := vmm.CleanJail(cfg)
	if err != nil {
		if vmm.WaitJailCgroupsGone(cfg, jailCgroupWait) {
			// The VMM's last threads were still leaving its cgroup.
			err = vmm.CleanJail(cfg)
		} else if held := vmm.JailCgroupHolders(cfg); held != "" {
			err = fmt.Errorf("%w (the cgroup still holds %s)", err, held)
		}
	}
	// Writable drives hot-plugged when the VMM ended had their ACL entry
	// too: revoke it, or the next sandbox given this uid could use them.
	if rec.Machine != nil && rec.Jail != nil && rec.Jail.UID != 0 {
		for _, sl := range rec.Machine.Pool {
			if sl.Drive != nil && !sl.Drive.ReadOnly && sl.Drive.Path != "" {
				err = errors.Join(err, kunix.RevokeUserACL(sl.Drive.Path, rec.Jail.UID))
			}
		}
	}
	// A jail of another firecracker (the record's may have changed) or of
	// cgroups since changed is found by its place.
	for _, p := range JailLeftovers(filepath.Dir(dir), filepath.Base(dir)) {
		if strings.HasPrefix(p, "/sys/fs/cgroup/") {
			err = errors.Join(err, os.Remove(p))
		} else {
			err = errors.Join(err, os.RemoveAll(p))
		}
	}
	return err
}

// jailedVMMs finds the jailed VMMs of the sandbox in dir from the host
// alone: a jailed Firecracker's command line and working directory are the
// jail's, but its cgroup is <root tag>/<VMM ID> (when it has limits).
func jailedVMMs(dir string) []procRef {
	tag, vid := jailRootTag(filepath.Dir(dir)), vmmID(filepath.Base(dir))
	// Only a sandbox with a cgroup can have a jailed VMM: do not scan
	// every process's cgroups for the others.
	if !slices.ContainsFunc(cgroupCandidates(tag, vid), func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	}) {
		return nil
	}
	pids, err := kunix.ProcessesInCgroup("/" + tag + "/" + vid)
	if err != nil {
		return nil
	}
	var refs []procRef
	for _, p := range pids {
		if st, err := kunix.ProcessStartTime(p); err == nil {
			refs = append(refs, procRef{PID: p, StartTime: st})
		}
	}
	return refs
}

// hostHasID reports whether uid names a user, or a group, of the host.
func hostHasID(uid int) bool {
	s := strconv.Itoa(uid)
	if _, err := user.LookupId(s); err == nil {
		return true
	}
	_, err := user.LookupGroupId(s)
	return err == nil
}

// prepareJail gives a jailed sandbox about to start its uid and gid, once
// for its life; it is called with the sandbox's lock held, before the
// record is saved as starting.
func (r *Runtime) prepareJail(l *store.Locked, rec *record) error {
	if rec.Spec.Jailer == "" {
		return nil
	}
	prefer := 0
	if rec.Jail != nil {
		prefer = rec.Jail.UID
	}
	j, err := allocJailID(r.st.Root(), l.ID(), prefer)
	if err != nil {
		return err
	}
	if rec.Jail != nil && *rec.Jail == *j {
		return nil
	}
	// Recorded before the monitor is spawned: it reads the record
	// without the lock and must not see a jailed sandbox without its uid.
	old := rec.Jail
	rec.Jail = j
	if err := l.Save(rec); err != nil {
		rec.Jail = old
		return errors.Join(err, releaseJailID(r.st.Root(), l.ID(), j))
	}
	return nil
}

// checkJailUID refuses to run a jailed sandbox whose record holds no jail
// uid: its Firecracker would run as root.
func checkJailUID(rec *record) error {
	if rec.Spec.Jailer != "" && (rec.Jail == nil || rec.Jail.UID == 0) {
		return fmt.Errorf("%w: sandbox %q runs under the jailer but its record holds no jail uid: start it again", ErrInvalidState, rec.ID)
	}
	return nil
}

// releaseJail cleans what the jail of the sandbox in dir left (rec nil: its
// record is lost, the jail is found by its place), removes its copy
// directory and gives back its uid. It is called with the sandbox's lock
// held, once its VMM has ended, when the sandbox is removed.
func (r *Runtime) releaseJail(dir string, rec *record) error {
	if rec != nil && rec.Spec.Jailer == "" && rec.Jail == nil {
		return removeCopyDir(dir, rec) // never jailed
	}
	var err error
	var held *jailRec
	if rec != nil {
		err = cleanJail(dir, rec)
		held = rec.Jail
	} else {
		for _, p := range JailLeftovers(filepath.Dir(dir), filepath.Base(dir)) {
			if strings.HasPrefix(p, "/sys/fs/cgroup/") {
				err = errors.Join(err, os.Remove(p))
			} else {
				err = errors.Join(err, os.RemoveAll(p))
			}
		}
		// Its uid, from the host's registry (before it is given back), has
		// its entries on the shared copies revoked, so that the next
		// sandbox given that uid cannot read them.
		uid := 0
		held, _ := JailIDsHeld(filepath.Dir(dir))
		for u, id := range held {
			if id == filepath.Base(dir) {
				uid = u
			}
		}
		err = errors.Join(err, vmmproc.ReleaseShared(jailSharedDir(filepath.Dir(dir)), uid))
	}
	return errors.Join(err, releaseJailID(filepath.Dir(dir), filepath.Base(dir), held), removeCopyDir(dir, rec))
}

// afterJailedRemove removes the root's jail directories once a sandbox
// that was (or may have been: rec nil, its record lost) jailed has been
// removed, if it was the root's last. It runs after the sandbox's
// directory is gone: two sandboxes removed at once each see the other's
// directory before their own is gone, and the last to finish sees none.
func (r *Runtime) afterJailedRemove(rec *record) {
	if rec == nil || rec.Spec.Jailer != "" || rec.Jail != nil {
		removeEmptyJailParents(r.st.Root())
	}
}

// removeEmptyJailParents removes the directories that hold a root's jails
// and cgroups (and the shared copies no jail links) when the root has no
// sandbox left: a sandbox that starts meanwhile has its directory already,
// so the jailer never finds a parent removed under it (and a directory in
// use is not empty, and stays). Callers run it once a removed sandbox's
// directory is gone.
func removeEmptyJailParents(root string) {
	if store.HoldsSandboxes(root) {
		return
	}
	tag := jailRootTag(root)
	base := filepath.Join(jailChrootBase, tag)
	execs, _ := os.ReadDir(base)
	for _, e := range execs {
		os.Remove(filepath.Join(base, e.Name()))
	}
	os.Remove(base)
	os.Remove(jailCopiesDir(root))
	vmmproc.PurgeShared(jailSharedDir(root))
	os.Remove(jailSharedDir(root))
	for _, p := range cgroupCandidates(tag, "") {
		os.Remove(p)
	}
}

// JailLeftoversOfRoot lists what the jails of any sandbox of root have left
// on the host: chroots under the root's jail directory, cgroups under its
// parent cgroup, uids its sandboxes hold, and copy directories of drives. Empty once every sandbox of
// root is removed; for audits (kindling-churn).
func JailLeftoversOfRoot(root string) []string {
	tag := jailRootTag(root)
	var left []string
	base := filepath.Join(jailChrootBase, tag)
	execs, _ := os.ReadDir(base)
	for _, e := range execs {
		ids, _ := os.ReadDir(filepath.Join(base, e.Name()))
		for _, id := range ids {
			left = append(left, "chroot "+filepath.Join(base, e.Name(), id.Name()))
		}
	}
	for _, parent := range cgroupCandidates(tag, "") {
		ents, _ := os.ReadDir(parent)
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, "cgroup "+filepath.Join(parent, e.Name()))
			}
		}
	}
	held, _ := JailIDsHeld(root)
	for uid, id := range held {
		left = append(left, fmt.Sprintf("jail uid %d held for sandbox %s", uid, id))
	}
	copies, _ := os.ReadDir(jailCopiesDir(root))
	for _, e := range copies {
		left = append(left, "drive copies "+filepath.Join(jailCopiesDir(root), e.Name()))
	}
	shared, _ := os.ReadDir(jailSharedDir(root))
	for _, e := range shared {
		left = append(left, "shared copy "+filepath.Join(jailSharedDir(root), e.Name()))
	}
	return left
}

// tapOwner is the owner a tap the sandbox rec uses must have, so that its
// jailed Firecracker, running as the sandbox's own uid without
// CAP_NET_ADMIN, may attach to it: that uid and gid. Nil for a sandbox
// that is not jailed (or not started yet), whose VMM runs as root. Taps
// kindling creates get it; a tap the caller names (tap=NAME) must have it
// already (ip tuntap add ... user UID group GID).
func tapOwner(rec *record) *netdev.Owner {
	if rec.Spec.Jailer == "" || rec.Jail == nil {
		return nil
	}
	return &netdev.Owner{UID: rec.Jail.UID, GID: rec.Jail.GID}
}

// jailInfo fills in the jail of a jailed sandbox's Info: its uid, its
// chroot, and the sockets, which are inside the chroot.
func jailInfo(in *Info, rec *record, dir string) {
	if rec.Spec.Jailer == "" || store.ValidateID(filepath.Base(dir)) != nil {
		return
	}
	cfg := vmmConfig(rec, dir)
	in.APISocket, in.VsockSocket = vmm.JailSockets(cfg)
	in.Chroot, _ = vmm.JailDirs(cfg)
	if rec.Jail != nil {
		in.JailUID = rec.Jail.UID
	}
}

// vsockPath is the host path of the vsock socket of the sandbox rec living
// in dir: in its directory, or, jailed, inside its chroot, where the
// jailed Firecracker made it.
func vsockPath(rec *record, dir string) string {
	if rec.Spec.Jailer == "" || store.ValidateID(filepath.Base(dir)) != nil {
		return filepath.Join(dir, vsockName)
	}
	_, vsock := vmm.JailSockets(vmmConfig(rec, dir))
	return vsock
}

// jailCgroupWait bounds how long cleanJail waits for a dead VMM's cgroup to
// empty.
const jailCgroupWait = 3 * time.Second
