package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/internal/vmmproc"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// asRootWithJailerDefault clears the test rig's jailer opt-out for the
// test, and skips without root.
func asRootWithJailerDefault(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jailer policy applies to root")
	}
	t.Setenv(EnvNoJailer, "")
}

// TestD4JailerByDefaultAsRoot: as root with no opt-out a sandbox gets the
// jailer found; with none found it is refused with the fixes, before
// anything is recorded; --no-jailer and KINDLING_NO_JAILER opt out.
func TestD4JailerByDefaultAsRoot(t *testing.T) {
	asRootWithJailerDefault(t)
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	jailer := filepath.Join(t.TempDir(), "jailer")
	if err := os.WriteFile(jailer, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("found through KINDLING_JAILER", func(t *testing.T) {
		t.Setenv("KINDLING_JAILER", jailer)
		in, err := r.Create(ctx, Spec{ID: "d4-default", Firecracker: fc}, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Remove(ctx, in.ID, true)
		if in.Spec.Jailer != jailer {
			t.Errorf("the sandbox's jailer = %q, want the one found, %q", in.Spec.Jailer, jailer)
		}
	})
	t.Run("none found refused", func(t *testing.T) {
		t.Setenv("KINDLING_JAILER", "")
		t.Setenv("PATH", t.TempDir())
		t.Setenv("KINDLING_INSTALL_DIR", t.TempDir())
		_, err := r.Create(ctx, Spec{ID: "d4-none", Firecracker: fc}, CreateOptions{})
		if !errors.Is(err, ErrNoJailer) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("Create without a jailer as root: %v, want ErrNoJailer", err)
		}
		for _, fix := range []string{"--no-jailer", "kindling install firecracker"} {
			if !strings.Contains(err.Error(), fix) {
				t.Errorf("the refusal %q does not name the fix %s", err, fix)
			}
		}
		if r.dirExists("d4-none") {
			t.Error("a refused sandbox was recorded")
		}
	})
	t.Run("opt-outs", func(t *testing.T) {
		t.Setenv("KINDLING_JAILER", jailer)
		in, err := r.Create(ctx, Spec{ID: "d4-optout", Firecracker: fc, NoJailer: true}, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.Remove(ctx, in.ID, true)
		if in.Spec.Jailer != "" {
			t.Errorf("NoJailer: the sandbox's jailer = %q, want none", in.Spec.Jailer)
		}
		t.Setenv(EnvNoJailer, "1")
		in, err = r.Create(ctx, Spec{ID: "d4-optout-env", Firecracker: fc}, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.Remove(ctx, in.ID, true)
		if in.Spec.Jailer != "" {
			t.Errorf("%s=1: the sandbox's jailer = %q, want none", EnvNoJailer, in.Spec.Jailer)
		}
		_, err = r.Create(ctx, Spec{ID: "d4-both", Firecracker: fc, Jailer: jailer, NoJailer: true}, CreateOptions{})
		if !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("a jailer and no jailer: %v, want ErrInvalidSpec", err)
		}
	})
}

// TestD4CgroupLimitsValidated: cpu and memory limits are checked before
// anything is recorded, and need the jailer.
func TestD4CgroupLimitsValidated(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	jailer := filepath.Join(t.TempDir(), "jailer")
	if err := os.WriteFile(jailer, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec Spec
		want string // "" for accepted
	}{
		{"limits without the jailer", Spec{NoJailer: true, CPULimit: 1}, "without the jailer"},
		{"negative cpu", Spec{Jailer: jailer, CPULimit: -1}, "cpu limit"},
		{"cpu too small", Spec{Jailer: jailer, CPULimit: 0.001}, "from 0.01"},
		{"memory not a size", Spec{Jailer: jailer, MemoryLimit: "lots"}, "memory limit"},
		{"memory below the guest's", Spec{Jailer: jailer, MemoryLimit: "128M"}, "at least 144M"},
		{"good", Spec{Jailer: jailer, CPULimit: 0.5, MemoryLimit: "256M"}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.ID, tt.spec.Firecracker = fmt.Sprintf("lim%d", i), fc
			in, err := r.Create(ctx, tt.spec, CreateOptions{})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				r.Remove(ctx, in.ID, true)
				return
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create: %v, want ErrInvalidSpec saying %q", err, tt.want)
			}
			if r.dirExists(tt.spec.ID) {
				t.Error("a refused sandbox was recorded")
			}
		})
	}
	if got := cgroupSettings(Spec{CPULimit: 1.5, MemoryLimit: "1G"}, 2); strings.Join(got, ";") != "cpu.max=150000 100000;memory.max=1073741824" {
		t.Errorf("cgroup v2 settings = %q", got)
	}
	if got := cgroupSettings(Spec{CPULimit: 0.5, MemoryLimit: "256"}, 1); strings.Join(got, ";") != "cpu.cfs_period_us=100000;cpu.cfs_quota_us=50000;memory.limit_in_bytes=268435456" {
		t.Errorf("cgroup v1 settings = %q", got)
	}
}

// TestD4UidRangeOnePerSandbox: every jailed sandbox gets a uid of its own
// from the configured range, host-wide (two state roots never share one),
// kept by the sandbox, never one a host user has, and given back when the
// sandbox is removed; a bad range is refused with the fix.
func TestD4UidRangeOnePerSandbox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jail uid registry is root's")
	}
	roots := []string{testutil.ShortTempDir(t), testutil.ShortTempDir(t)}
	// A range of four next to the default one, which other tests use.
	const first = 1610678272
	t.Setenv(EnvJailIDs, fmt.Sprintf("%d-%d", first, first+3))
	type sb struct{ root, id string }
	var all []sb
	seen := map[int]sb{}
	alloc := func(s sb) (*jailRec, error) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(s.root, s.id), 0o700); err != nil {
			t.Fatal(err)
		}
		return allocJailID(s.root, s.id, 0)
	}
	t.Cleanup(func() {
		for _, s := range all {
			releaseJailID(s.root, s.id, nil)
		}
	})
	// Two sandboxes of one ID in each of two roots: four uids.
	for _, root := range roots {
		for _, id := range []string{"web", "db"} {
			s := sb{root, id}
			all = append(all, s)
			j, err := alloc(s)
			if err != nil {
				t.Fatal(err)
			}
			if j.UID < first || j.UID > first+3 || j.GID != j.UID {
				t.Errorf("%v got uid %d gid %d, outside the range", s, j.UID, j.GID)
			}
			if other, ok := seen[j.UID]; ok {
				t.Errorf("%v and %v share uid %d", s, other, j.UID)
			}
			seen[j.UID] = s
			if again, err := allocJailID(s.root, s.id, 0); err != nil || again.UID != j.UID {
				t.Errorf("a second allocation for %v gave %v, %v; want its uid %d again", s, again, err, j.UID)
			}
		}
	}
	extra := sb{roots[0], "cache"}
	all = append(all, extra)
	if _, err := alloc(extra); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a fifth sandbox in a range of four: %v, want a refusal", err)
	}
	if held, err := JailIDsHeld(roots[0]); err != nil || len(held) != 2 {
		t.Errorf("JailIDsHeld(first root) = %v, %v; want its two", held, err)
	}
	// Removing a sandbox gives its uid back; a sandbox whose directory is
	// gone (removed by a monitor that died) loses its uid to the next.
	if err := releaseJailID(roots[0], "web", nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(roots[1], "db")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []sb{extra, {roots[1], "queue"}} {
		all = append(all, s)
		if _, err := alloc(s); err != nil {
			t.Fatalf("allocation for %v after one release and one stale: %v", s, err)
		}
	}
	// A recorded uid is taken again when it is free.
	if err := releaseJailID(roots[0], "db", nil); err != nil {
		t.Fatal(err)
	}
	if j, err := allocJailID(roots[0], "db", first+3); err != nil || j.UID != first+3 {
		// first+3 may be held by another; then any free one will do.
		if err != nil {
			t.Errorf("re-allocation preferring %d: %v", first+3, err)
		}
	}
	// A uid the host has is never handed out.
	t.Setenv(EnvJailIDs, "0-0")
	if _, err := alloc(sb{roots[0], "root0"}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("range 0-0: %v, want refused", err)
	}
	t.Setenv(EnvJailIDs, "1-1") // bin or daemon on most hosts, else free
	all = append(all, sb{roots[0], "bin"})
	if j, err := alloc(sb{roots[0], "bin"}); err == nil && hostHasID(j.UID) {
		t.Errorf("allocated uid %d, which the host has", j.UID)
	}
	t.Setenv(EnvJailIDs, "nonsense")
	if _, err := alloc(sb{roots[0], "bad"}); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), EnvJailIDs) {
		t.Errorf("a bad range: %v, want a refusal naming %s", err, EnvJailIDs)
	}
}

// TestD4JailPathUniquePerStateRoot: two state roots' sandboxes of one ID
// get different jails and cgroups.
func TestD4JailPathUniquePerStateRoot(t *testing.T) {
	rec := &record{ID: "web", Spec: Spec{Jailer: "/bin/jailer", Firecracker: "/bin/firecracker"}}
	a := jailerConfig(rec, "/run/a/web")
	b := jailerConfig(rec, "/run/b/web")
	if a.ChrootBase == b.ChrootBase || a.ParentCgroup == b.ParentCgroup {
		t.Fatalf("roots /run/a and /run/b share a jail: %+v, %+v", a, b)
	}
	if len(a.Cgroups) == 0 {
		t.Error("a jailed VMM without limits gets no cgroup, by which it is found from the host")
	}
}

// realJailRuntime is newRuntime for the real Firecracker and jailer, with
// the jailer the default (no opt-out, found through KINDLING_JAILER).
func realJailRuntime(t *testing.T) (*Runtime, string) {
	t.Helper()
	asRootWithJailerDefault(t)
	testutil.Jailer(t) // skips without one
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("skipping: no /dev/kvm")
	}
	return newRuntime(t, true)
}

// TestD4ChrootRemovedOnEveryEnd runs jailed sandboxes under the real
// jailer by default (no --jailer given) and checks that each runs as its
// own unprivileged uid in a cgroup of its own, and that no chroot, cgroup
// or uid is left after a stop, a guest power-off, a kill of the monitor
// followed by rm -f, and gc.
func TestD4ChrootRemovedOnEveryEnd(t *testing.T) {
	r, fc := realJailRuntime(t)
	testJailEnds(t, r, fc)
}

// TestD4ChrootRemovedOnEveryEndFake is TestD4ChrootRemovedOnEveryEnd with
// the fake jailer jailing the fake Firecracker (for real: chroot, cgroup,
// uid), for machines without a jailer.
func TestD4ChrootRemovedOnEveryEndFake(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, fc := newRuntime(t, false)
	testJailEnds(t, r, fc)
}

// testJailEnds is the body of the TestD4ChrootRemovedOnEveryEnd tests: r
// runs sandboxes under the jailer by default, with the firecracker fc.
func testJailEnds(t *testing.T, r *Runtime, fc string) {
	ctx := context.Background()
	idle := testutil.GuestKernel(t, guest.Options{Message: "jailed idle", Mode: guest.Halt})
	off := testutil.GuestKernel(t, guest.Options{Message: "jailed off", Mode: guest.PowerOff})

	noneLeft := func(t *testing.T, id string) {
		t.Helper()
		if left := JailLeftovers(r.Root(), id); len(left) > 0 {
			t.Errorf("sandbox %s left %q", id, left)
		}
	}
	start := func(t *testing.T, id, kernel string, limits bool) Info {
		t.Helper()
		s := Spec{ID: id, Firecracker: fc, Kernel: kernel}
		if limits {
			s.CPULimit, s.MemoryLimit = 0.5, "256M"
		}
		in, err := r.Create(ctx, s, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if in.Spec.Jailer == "" {
			t.Fatal("as root the sandbox was not given the jailer")
		}
		if in, err = r.Start(ctx, id); err != nil {
			r.Remove(ctx, id, true)
			t.Fatal(err)
		}
		return in
	}

	t.Run("stop", func(t *testing.T) {
		in := start(t, "d4stop", idle, true)
		var rec record
		if err := r.st.Load(in.ID, &rec); err != nil || rec.Jail == nil {
			t.Fatalf("record %+v, %v: no jail uid", rec.Jail, err)
		}
		if fi, err := os.Stat(in.APISocket); err != nil || fi.Mode().Type() != os.ModeSocket || !strings.HasPrefix(in.APISocket, in.Chroot+"/") {
			t.Errorf("inspect's api_socket %s (chroot %s): %v, want the socket in the jail", in.APISocket, in.Chroot, err)
		}
		if in.JailUID != rec.Jail.UID {
			t.Errorf("inspect's jail_uid = %d, want %d", in.JailUID, rec.Jail.UID)
		}
		uid := statusUID(t, in.PID)
		if uid != rec.Jail.UID || uid == 0 {
			t.Errorf("the VMM runs as uid %d, want its own %d", uid, rec.Jail.UID)
		}
		if found := jailedVMMs(filepath.Join(r.Root(), in.ID)); len(found) != 1 || found[0].PID != in.PID {
			t.Errorf("the jailed VMM found from the host: %v, want pid %d", found, in.PID)
		}
		limit := filepath.Join("/sys/fs/cgroup", jailRootTag(r.Root()), vmmID(in.ID), "memory.max")
		if vmm.HostCgroupVersion() == 1 {
			limit = filepath.Join("/sys/fs/cgroup/memory", jailRootTag(r.Root()), vmmID(in.ID), "memory.limit_in_bytes")
		}
		if b, _ := os.ReadFile(limit); strings.TrimSpace(string(b)) != strconv.Itoa(256<<20) {
			t.Errorf("%s = %q, want 256 MiB", limit, b)
		}
		if err := r.Stop(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		noneLeft(t, in.ID)
		// It starts again, in a new jail, as the same uid.
		again, err := r.Start(ctx, in.ID)
		if err != nil {
			t.Fatalf("restart of a stopped jailed sandbox: %v", err)
		}
		if uid := statusUID(t, again.PID); uid != rec.Jail.UID {
			t.Errorf("restarted, the VMM runs as uid %d, want its %d", uid, rec.Jail.UID)
		}
		if err := r.Stop(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		noneLeft(t, in.ID)
		if err := r.Remove(ctx, in.ID, false); err != nil {
			t.Fatal(err)
		}
		if held, _ := JailIDsHeld(r.Root()); len(held) != 0 {
			t.Errorf("uids held after rm: %v", held)
		}
	})
	t.Run("guest power-off", func(t *testing.T) {
		in := start(t, "d4off", off, false)
		if _, err := r.Wait(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		noneLeft(t, in.ID)
		if err := r.Remove(ctx, in.ID, false); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("monitor killed then rm -f", func(t *testing.T) {
		in := start(t, "d4kill", idle, false)
		syscall.Kill(in.MonitorPID, syscall.SIGKILL)
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(in.MonitorPID, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := r.Remove(ctx, in.ID, true); err != nil {
			t.Fatal(err)
		}
		noneLeft(t, in.ID)
		if stillRuns(in.PID) {
			t.Errorf("the jailed VMM %d runs on after rm -f", in.PID)
		}
		if held, _ := JailIDsHeld(r.Root()); len(held) != 0 {
			t.Errorf("uids held after rm -f: %v", held)
		}
	})
	t.Run("record lost, found from the host", func(t *testing.T) {
		in := start(t, "d4lost", idle, false)
		syscall.Kill(in.MonitorPID, syscall.SIGKILL)
		time.Sleep(50 * time.Millisecond)
		if err := os.Remove(filepath.Join(r.Root(), in.ID, "state.json")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Collect(ctx, GCOptions{KillOrphans: true}); err != nil {
			t.Fatal(err)
		}
		noneLeft(t, in.ID)
		if stillRuns(in.PID) {
			t.Errorf("gc --kill-orphans left the jailed VMM %d of a sandbox without a record", in.PID)
			syscall.Kill(in.PID, syscall.SIGKILL)
		}
		if held, _ := JailIDsHeld(r.Root()); len(held) != 0 {
			t.Errorf("uids held after gc: %v", held)
		}
	})
}

// statusUID is the real uid of process pid.
func statusUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	t.Fatal("no Uid line")
	return -1
}

// stillRuns reports whether process pid exists and is not a zombie (a
// killed VMM whose monitor died is reaped by init, in its own time).
func stillRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// TestD4SnapshotOfJailedSandboxRestores: a jailed sandbox (with a writable
// root drive of the caller's, root-owned 0600, which its uid gets by an
// ACL) takes a snapshot owning its files, which restores twice into jailed
// clones with drive copies of their own; a restore without the jailer is
// refused with the fix. Nothing is left after.
func TestD4SnapshotOfJailedSandboxRestores(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	disk := filepath.Join(t.TempDir(), "root.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	kernel := testutil.GuestKernel(t, guest.Options{Message: "jailed snap", Mode: guest.Halt})
	in, err := r.Create(ctx, Spec{ID: "jsrc", Firecracker: fc, Kernel: kernel, Rootfs: &Disk{Path: disk}}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, in.ID, true)
	if in, err = r.Start(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	var rec record
	if err := r.st.Load(in.ID, &rec); err != nil || rec.Jail == nil {
		t.Fatalf("record: %v, jail %v", err, rec.Jail)
	}
	if ok, err := kunix.HasUserACL(disk, rec.Jail.UID); err != nil || !ok {
		t.Errorf("the caller's writable drive has no ACL entry for the sandbox's uid %d (%v)", rec.Jail.UID, err)
	}
	snap := filepath.Join(t.TempDir(), "snap")
	if _, err := r.Snapshot(ctx, in.ID, snap, SnapshotOptions{Own: true}); err != nil {
		t.Fatalf("snapshot owning its files of a jailed sandbox: %v", err)
	}
	man, err := readManifest(snap)
	if err != nil {
		t.Fatal(err)
	}
	mem := man.Snapshot.MemPath
	memInfo, err := os.Stat(mem)
	if err != nil {
		t.Fatal(err)
	}
	if memInfo.Mode().Perm()&0o077 != 0 {
		t.Fatalf("the snapshot's memory file is mode %v: the test needs one the jail uids cannot read", memInfo.Mode())
	}
	// Once the root's last sandbox (jsrc, removed by a defer above) is
	// gone, nothing of the shared copies is.
	t.Cleanup(func() {
		if _, err := os.Lstat(jailSharedDir(r.Root())); !errors.Is(err, os.ErrNotExist) {
			ents, _ := os.ReadDir(jailSharedDir(r.Root()))
			t.Errorf("the shared copies' directory is left after the root's last sandbox (%v): %v", err, ents)
		}
	})
	var clones []record
	// Checked after the clones' removals (deferred below, so run first):
	// the shared copy of the memory is kept for the next clone (the
	// snapshot is there, unchanged), with no entry of the clones' uids.
	defer func() {
		kept := false
		ents, _ := os.ReadDir(jailSharedDir(r.Root()))
		for _, e := range ents {
			p := filepath.Join(jailSharedDir(r.Root()), e.Name())
			if fi, err := os.Stat(p); err == nil && fi.Size() == memInfo.Size() && !strings.HasSuffix(p, ".src") {
				kept = true
				for _, c := range clones {
					if ok, _ := kunix.HasUserACL(p, c.Jail.UID); ok {
						t.Errorf("clone %s removed, its uid %d still has an entry on %s", c.ID, c.Jail.UID, p)
					}
				}
			}
		}
		if !kept {
			t.Errorf("the shared copy of the memory was not kept for the next clone: %v", ents)
		}
	}()
	for _, id := range []string{"jclone1", "jclone2"} {
		c, err := r.Restore(ctx, snap, RestoreOptions{ID: id, CopyOwnedDrives: true, Firecracker: fc})
		if err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		if c.Status != Running || c.Spec.Jailer == "" {
			t.Errorf("clone %s is %s, jailer %q; want running, jailed", id, c.Status, c.Spec.Jailer)
		}
		if c.Spec.Rootfs == nil || c.Spec.Rootfs.Path == disk {
			t.Errorf("clone %s uses the source's drive, not a copy of its own", id)
		}
		defer func() {
			if err := r.Remove(ctx, id, true); err != nil {
				t.Error(err)
			}
			if left := JailLeftovers(r.Root(), id); len(left) > 0 {
				t.Errorf("clone %s left %q", id, left)
			}
		}()
		var crec record
		if err := r.st.Load(id, &crec); err != nil || crec.Jail == nil {
			t.Fatalf("clone %s record: %v, jail %v", id, err, crec.Jail)
		}
		clones = append(clones, crec)
	}
	// The clones' jails share one copy of the memory file, readable by each
	// clone's uid through an ACL entry; the snapshot's own file is untouched.
	var shared os.FileInfo
	for _, c := range clones {
		instance, _ := vmm.JailDirs(vmmConfig(&c, filepath.Join(r.Root(), c.ID)))
		fi, err := os.Stat(filepath.Join(instance, "root", "snapshot.mem"))
		if err != nil {
			t.Fatalf("clone %s: the memory file in its jail: %v", c.ID, err)
		}
		if shared == nil {
			shared = fi
		} else if !os.SameFile(shared, fi) {
			t.Errorf("the clones' jails hold two copies of the memory file, want one shared")
		}
		// Group bits show the ACL's mask (r--); others get nothing.
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != 0 || fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("clone %s: the shared memory copy is uid %d mode %v, want root's, nothing for others", c.ID, st.Uid, fi.Mode())
		}
	}
	ents, err := os.ReadDir(jailSharedDir(r.Root()))
	if err != nil {
		t.Fatalf("the root's shared copies: %v", err)
	}
	found := false
	for _, e := range ents {
		p := filepath.Join(jailSharedDir(r.Root()), e.Name())
		fi, err := os.Stat(p)
		if err != nil || !os.SameFile(fi, shared) {
			continue
		}
		found = true
		for _, c := range clones {
			if ok, err := kunix.HasUserACL(p, c.Jail.UID); err != nil || !ok {
				t.Errorf("the shared memory copy has no ACL entry for clone %s's uid %d (%v)", c.ID, c.Jail.UID, err)
			}
		}
	}
	if !found {
		t.Errorf("the jails' memory file is not one of the shared copies %v", ents)
	}
	for _, c := range clones {
		if ok, _ := kunix.HasUserACL(mem, c.Jail.UID); ok {
			t.Errorf("the snapshot's own memory file got an ACL entry for uid %d", c.Jail.UID)
		}
	}
	if _, err := r.Restore(ctx, snap, RestoreOptions{ID: "jnojail", NoJailer: true, Firecracker: fc}); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "under the jailer") {
		t.Errorf("restore of a jailed snapshot with NoJailer: %v, want a refusal", err)
	}
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if ok, _ := kunix.HasUserACL(disk, rec.Jail.UID); ok {
		t.Errorf("the ACL entry for uid %d is left on the caller's drive after stop", rec.Jail.UID)
	}
}

// TestD4JailedSandboxAttachesItsTap: a tap kindling creates for a jailed
// sandbox belongs to the sandbox's uid, so that its Firecracker, which runs
// as that uid, can attach to it (the real Firecracker opens it at the
// network interface's PUT).
func TestD4JailedSandboxAttachesItsTap(t *testing.T) {
	r, fc := realJailRuntime(t)
	ctx := context.Background()
	kernel := testutil.GuestKernel(t, guest.Options{Message: "jailed tap", Mode: guest.Halt})
	in, err := r.Create(ctx, Spec{ID: "d4tap", Firecracker: fc, Kernel: kernel, Net: []Net{{Auto: true}}}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Remove(ctx, in.ID, true); err != nil {
			t.Error(err)
		}
	}()
	if in, err = r.Start(ctx, in.ID); err != nil {
		t.Fatalf("start a jailed sandbox with a tap of its own: %v", err)
	}
	if in.Status != Running || len(in.Taps) != 1 {
		t.Fatalf("sandbox %s with taps %v; want running with one", in.Status, in.Taps)
	}
	var rec record
	if err := r.st.Load(in.ID, &rec); err != nil || rec.Jail == nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/sys/class/net/" + in.Taps[0].Name + "/owner")
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(rec.Jail.UID) {
		t.Errorf("tap %s owner = %q (%v), want the sandbox's uid %d", in.Taps[0].Name, b, err, rec.Jail.UID)
	}
}

// TestD4HotplugInJail: a writable drive attached to a jailed sandbox is
// given to its uid by an ACL entry while attached; detaching removes its
// link from the jail and the entry, and attaching it again (through a new
// attach of the driver, which counts its names anew) works.
func TestD4HotplugInJail(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "jhot", Firecracker: fc, Demo: DemoIdle, Placeholders: 1, HotplugWritable: true}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, in.ID, true) // after a failure; the test removes it
	if in, err = r.Start(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		slot, err := r.AttachDrive(ctx, in.ID, Disk{Path: disk})
		if err != nil {
			t.Fatalf("attach, round %d: %v", round, err)
		}
		if ok, err := kunix.HasUserACL(disk, in.JailUID); err != nil || !ok {
			t.Errorf("round %d: no ACL entry for uid %d on the attached drive (%v)", round, in.JailUID, err)
		}
		if err := r.DetachDrive(ctx, in.ID, slot); err != nil {
			t.Fatalf("detach, round %d: %v", round, err)
		}
		if ok, _ := kunix.HasUserACL(disk, in.JailUID); ok {
			t.Errorf("round %d: the ACL entry for uid %d outlives the detach", round, in.JailUID)
		}
		ents, _ := os.ReadDir(filepath.Join(in.Chroot, "root"))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "hotplug-") {
				t.Errorf("round %d: %s is left in the jail after the detach", round, e.Name())
			}
		}
	}
	// Attached when its monitor is killed: rm -f revokes the entry, from
	// the record, so that the uid's next holder cannot use the drive.
	if _, err := r.AttachDrive(ctx, in.ID, Disk{Path: disk}); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(in.MonitorPID, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); stillRuns(in.MonitorPID) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Remove(ctx, in.ID, true); err != nil {
		t.Fatal(err)
	}
	if ok, _ := kunix.HasUserACL(disk, in.JailUID); ok {
		t.Errorf("the ACL entry for uid %d on a drive attached when the monitor died outlives rm -f", in.JailUID)
	}
}

// TestD4CNITapOwnedBySandboxUID: the tap a CNI network gives a jailed
// sandbox belongs to the sandbox's uid (its Firecracker attaches to it as
// that uid), here under the fake jailer.
func TestD4CNITapOwnedBySandboxUID(t *testing.T) {
	needCNI(t)
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	ctx := context.Background()
	e := newCNIEnv(t)
	r, fc := newRuntime(t, false)
	id := "kdsbx-" + hexID(t, 4)
	if _, err := r.Create(ctx, e.spec(t, id, fc), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Remove(ctx, id, true); err != nil {
			t.Error(err)
		}
		e.checkNothingLeft(t, id, "after rm")
	}()
	in, err := r.Start(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if in.JailUID == 0 {
		t.Fatal("the CNI sandbox was not jailed")
	}
	out, err := exec.Command("ip", "-n", network.CNINetNSName(id), "-d", "link", "show", "type", "tun").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("user %d", in.JailUID)) {
		t.Errorf("the sandbox's taps are not the jail uid %d's:\n%s", in.JailUID, out)
	}
}

// gc of a root without sandboxes removes the shared copies a crash left
// (none linked, the source still there), and their directory.
func TestD4GCRemovesLeftSharedCopies(t *testing.T) {
	asRootWithJailerDefault(t)
	r, _ := newRuntime(t, false)
	src := filepath.Join(t.TempDir(), "mem")
	if err := os.WriteFile(src, []byte("guest memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := jailSharedDir(r.Root())
	if err := os.MkdirAll(filepath.Dir(shared), 0o755); err != nil {
		t.Fatal(err)
	}
	jail, err := os.MkdirTemp(filepath.Dir(shared), "jail")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(jail)
	if _, err := vmmproc.StageShared(shared, src, filepath.Join(jail, "mem"), 64010); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) {
			t.Skipf("no POSIX ACLs under %s: %v", filepath.Dir(shared), err)
		}
		t.Fatal(err)
	}
	os.RemoveAll(jail) // the jail went, its release did not run
	if left := JailLeftoversOfRoot(r.Root()); len(left) == 0 {
		t.Fatalf("no leftover listed for the shared copy in %s", shared)
	}
	if _, err := r.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(shared); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gc of a root without sandboxes left %s (%v)", shared, err)
	}
	if left := JailLeftoversOfRoot(r.Root()); len(left) > 0 {
		t.Errorf("leftovers after gc: %q", left)
	}
}

// Jailed sandboxes removed at once leave nothing of the root's jails:
// each removal looks for the root's other sandboxes only once its own
// directory is gone, so the last to finish sees none.
func TestD4ConcurrentRemovesLeaveNoJailParents(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "removed at once")
	ids := []string{"j1", "j2", "j3"}
	for _, id := range ids {
		if _, err := r.Create(ctx, Spec{ID: id, Firecracker: fc, Kernel: kernel}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	base := filepath.Join(jailChrootBase, jailRootTag(r.Root()))
	if _, err := os.Stat(base); err != nil {
		t.Fatalf("the root's jail base: %v", err)
	}
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() { errs <- r.Remove(ctx, id, true) }()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, p := range []string{base, jailCopiesDir(r.Root()), jailSharedDir(r.Root())} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left after the root's sandboxes were removed at once (%v)", p, err)
		}
	}
	if left := JailLeftoversOfRoot(r.Root()); len(left) > 0 {
		t.Errorf("leftovers: %q", left)
	}
}
