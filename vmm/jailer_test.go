package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestNewJailLayout(t *testing.T) {
	c := Config{Firecracker: "/usr/local/bin/firecracker-v1.7.0", ID: "vm-1", MetricsPath: "/run/m",
		Vsock:  &Vsock{CID: 3, Path: "/run/k/v.sock"},
		Jailer: &JailerConfig{ChrootBase: "/srv/j", Cgroups: []string{"cpu.max=max"}, CgroupVersion: 2}}
	got := newJailLayout(&c)
	root := "/srv/j/firecracker-v1.7.0/vm-1/root"
	want := jailLayout{
		InstanceDir:       "/srv/j/firecracker-v1.7.0/vm-1",
		ChrootDir:         root,
		RootDir:           root,
		ExecName:          "firecracker-v1.7.0",
		SocketPathHost:    root + "/firecracker.sock",
		SocketPathInJail:  "/firecracker.sock",
		LogPathHost:       root + "/firecracker.log",
		LogPathInJail:     "/firecracker.log",
		MetricsPathHost:   root + "/firecracker.metrics",
		MetricsPathInJail: "/firecracker.metrics",
		VsockPathHost:     root + "/v.sock",
		VsockPathInJail:   "/v.sock",
		PIDFile:           root + "/firecracker-v1.7.0.pid",
		CgroupDirs:        []string{"/sys/fs/cgroup/firecracker-v1.7.0/vm-1"},
	}
	got.grants, want.grants = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("newJailLayout() =\n%+v\nwant\n%+v", got, want)
	}

	// Without metrics, vsock or cgroup settings, and with the default base.
	c = Config{Firecracker: "/usr/bin/firecracker", ID: "a", Jailer: &JailerConfig{}}
	got = newJailLayout(&c)
	if got.ChrootDir != "/srv/jailer/firecracker/a/root" || got.MetricsPathHost != "" || got.VsockPathHost != "" || got.CgroupDirs != nil {
		t.Fatalf("newJailLayout() = %+v", got)
	}
}

func TestJailerArgs(t *testing.T) {
	tests := []struct {
		name   string
		config Config
		want   []string
	}{
		{
			name:   "minimal",
			config: Config{Firecracker: "/bin/firecracker", ID: "vm-1", Jailer: &JailerConfig{UID: 123, GID: 100}},
			want: []string{"--id", "vm-1", "--exec-file", "/bin/firecracker", "--uid", "123", "--gid", "100",
				"--chroot-base-dir", "/srv/jailer", "--cgroup-version", "2",
				"--", "--api-sock", "/firecracker.sock", "--log-path", "/firecracker.log"},
		},
		{
			name: "everything",
			config: Config{Firecracker: "/bin/firecracker", ID: "vm-2", LogLevel: "Debug", MetricsPath: "/m",
				Jailer: &JailerConfig{UID: 1, GID: 2, ChrootBase: "/j", CgroupVersion: 1, NetNS: "/var/run/netns/n",
					Cgroups: []string{"cpuset.cpus=0", "cpuset.mems=0"}, NewPIDNS: true}},
			want: []string{"--id", "vm-2", "--exec-file", "/bin/firecracker", "--uid", "1", "--gid", "2",
				"--chroot-base-dir", "/j", "--cgroup-version", "1", "--netns", "/var/run/netns/n",
				"--cgroup", "cpuset.cpus=0", "--cgroup", "cpuset.mems=0", "--new-pid-ns",
				"--", "--api-sock", "/firecracker.sock", "--log-path", "/firecracker.log", "--level", "Debug",
				"--metrics-path", "/firecracker.metrics"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := jailerArgs(&tt.config, newJailLayout(&tt.config))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("jailerArgs() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// jailFixture returns a fixture, a valid jailed Config on it and its layout.
func jailFixture(t *testing.T) (*fixture, Config, jailLayout) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("staging a jail chowns files to another user: needs root")
	}
	f := newFixture(t)
	c := f.config()
	c.Jailer = f.jailerConfig()
	c.Jailer.Cgroups = nil
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// The writable drive's user gives the jail's user access to it, as
	// kindling never does (it changes no owner of a file it is given).
	for _, d := range c.Drives {
		if !d.ReadOnly {
			if err := os.Chown(d.Path, c.Jailer.UID, c.Jailer.GID); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f, c, newJailLayout(&c)
}

func TestStageJail(t *testing.T) {
	_, c, l := jailFixture(t)
	jailed, cleanup, err := stageJail(&c, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cleanup() })

	// The in-jail paths the API will be given.
	paths := []struct {
		name         string
		inJail, host string
		wantInJail   string
		sameAsOrigin string // the host file it must be a hard link of; "" for a new file
	}{
		{"kernel", jailed.Kernel, c.Kernel, "/kernel", c.Kernel},
		{"initrd", jailed.Initrd, c.Initrd, "/initrd", c.Initrd},
		{"root drive", jailed.Drives[0].Path, c.Drives[0].Path, "/drive-rootfs", c.Drives[0].Path},
		{"data drive", jailed.Drives[1].Path, c.Drives[1].Path, "/drive-data_1", c.Drives[1].Path},
		{"log", jailed.LogPath, "", "/firecracker.log", ""},
		{"metrics", jailed.MetricsPath, "", "/firecracker.metrics", ""},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			if p.inJail != p.wantInJail {
				t.Fatalf("in-jail path %q, want %q", p.inJail, p.wantInJail)
			}
			fi, err := os.Stat(filepath.Join(l.ChrootDir, p.inJail))
			if err != nil {
				t.Fatal(err)
			}
			if !canUse(fi, c.Jailer.UID, c.Jailer.GID, false) {
				t.Errorf("mode %v owner %v: the jail's user %d cannot read it", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, c.Jailer.UID)
			}
			if p.sameAsOrigin != "" {
				orig, err := os.Stat(p.sameAsOrigin)
				if err != nil {
					t.Fatal(err)
				}
				if !os.SameFile(fi, orig) {
					t.Errorf("not a hard link of %s", p.sameAsOrigin)
				}
			}
		})
	}
	if jailed.SocketPath != l.SocketPathHost {
		t.Errorf("jailed SocketPath %q, want the host path %q", jailed.SocketPath, l.SocketPathHost)
	}
	if jailed.Vsock.Path != "/v.sock" || c.Vsock.Path == jailed.Vsock.Path {
		t.Errorf("jailed vsock path %q (original %q), want /v.sock and the original unchanged", jailed.Vsock.Path, c.Vsock.Path)
	}
	if c.Drives[0].Path == jailed.Drives[0].Path {
		t.Error("stageJail changed the caller's drives")
	}

	// A second staging of the same ID is refused.
	if _, _, err := stageJail(&c, l); !errors.Is(err, os.ErrExist) {
		t.Errorf("second stageJail: %v, want ErrExist", err)
	}

	if err := cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.InstanceDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after cleanup, %s: %v, want it gone", l.InstanceDir, err)
	}
	if _, err := os.Stat(filepath.Dir(l.InstanceDir)); err != nil {
		t.Errorf("cleanup removed more than the instance: %v", err)
	}
	if _, err := os.Stat(c.Kernel); err != nil {
		t.Errorf("cleanup removed the original kernel: %v", err)
	}
}

func TestStageJailFailureCleansUp(t *testing.T) {
	_, c, l := jailFixture(t)
	if err := os.Remove(c.Drives[1].Path); err != nil {
		t.Fatal(err)
	}
	_, cleanup, err := stageJail(&c, l)
	if err == nil {
		_ = cleanup()
		t.Fatal("stageJail with a missing drive succeeded")
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stageJail: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(l.InstanceDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a failed stageJail, %s: %v, want it gone", l.InstanceDir, err)
	}
}

// TestStageJailAcrossFilesystems puts the chroot base on /dev/shm, which is
// a tmpfs unlike os.TempDir on most machines.
func TestStageJailAcrossFilesystems(t *testing.T) {
	f, c, _ := jailFixture(t)
	base, err := os.MkdirTemp("/dev/shm", "kvj")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var a, b syscall.Statfs_t
	if syscall.Statfs(base, &a) != nil || syscall.Statfs(f.dir, &b) != nil || a.Fsid == b.Fsid {
		t.Skip("/dev/shm and the temporary directory are one filesystem")
	}
	c.Jailer.ChrootBase = base
	l := newJailLayout(&c)

	t.Run("writable drive refused", func(t *testing.T) {
		_, cleanup, err := stageJail(&c, l)
		if err == nil {
			_ = cleanup()
			t.Fatal("stageJail copied a writable drive across filesystems")
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "jailer.chroot_base" {
			t.Errorf("stageJail: %v, want a *ConfigError for jailer.chroot_base", err)
		}
		if _, err := os.Stat(l.InstanceDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after a failed stageJail, %s: %v, want it gone", l.InstanceDir, err)
		}
	})
	t.Run("read-only files copied", func(t *testing.T) {
		c := c
		c.Drives = []Drive{c.Drives[0]} // read-only
		jailed, cleanup, err := stageJail(&c, l)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := cleanup(); err != nil {
				t.Error(err)
			}
		}()
		got, err := os.ReadFile(filepath.Join(l.ChrootDir, jailed.Kernel))
		if want, _ := os.ReadFile(c.Kernel); err != nil || string(got) != string(want) {
			t.Fatalf("copied kernel: %q, %v", got, err)
		}
	})
}

// TestD4StageJailNeverChownsUserFiles: staging a jail for an unprivileged
// uid never changes the owner or mode of the caller's files: a read-only
// file the jail's user cannot read is copied (and the copy given to it), a
// writable one is used in place with an ACL entry for the jail's uid that
// goes with the jail; the originals are as they were after the jail is
// removed.
func TestD4StageJailNeverChownsUserFiles(t *testing.T) {
	_, c, l := jailFixture(t)
	private := func(p string) {
		t.Helper()
		if err := os.Chown(p, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ownerOf := func(p string) string {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return fmt.Sprintf("%d:%d %v", st.Uid, st.Gid, fi.Mode().Perm())
	}
	private(c.Kernel)
	wantKernel := ownerOf(c.Kernel)

	t.Run("writable drive used in place with an ACL", func(t *testing.T) {
		private(c.Drives[1].Path)
		before := ownerOf(c.Drives[1].Path)
		jailed, cleanup, err := stageJail(&c, l)
		if err != nil {
			if errors.Is(err, syscall.EOPNOTSUPP) {
				t.Skipf("skipping: no POSIX ACLs here: %v", err)
			}
			t.Fatal(err)
		}
		in, err := os.Stat(filepath.Join(l.ChrootDir, jailed.Drives[1].Path))
		orig, _ := os.Stat(c.Drives[1].Path)
		if err != nil || !os.SameFile(in, orig) {
			t.Errorf("the writable drive in the jail is not the caller's file (%v): the guest's writes would be lost", err)
		}
		if ok, err := kunix.HasUserACL(c.Drives[1].Path, c.Jailer.UID); err != nil || !ok {
			t.Errorf("no ACL entry for the jail's uid %d on the writable drive (%v)", c.Jailer.UID, err)
		}
		// While the ACL has a named entry, the group bits ls shows are its
		// mask; the owner and group must not change.
		if got, _, _ := strings.Cut(ownerOf(c.Drives[1].Path), " "); !strings.HasPrefix(before, got+" ") {
			t.Errorf("the writable drive is now owned by %s, was %s", got, before)
		}
		if err := cleanup(); err != nil {
			t.Fatal(err)
		}
		if ok, err := kunix.HasUserACL(c.Drives[1].Path, c.Jailer.UID); err != nil || ok {
			t.Errorf("the ACL entry for uid %d is still there after the jail was removed (%v)", c.Jailer.UID, err)
		}
		if got := ownerOf(c.Drives[1].Path); got != before {
			t.Errorf("after the jail, the writable drive is %s, was %s", got, before)
		}
		if _, err := os.Stat(l.InstanceDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after cleanup, %s: %v, want it gone", l.InstanceDir, err)
		}
	})
	t.Run("read-only copied", func(t *testing.T) {
		c := c
		c.Drives = []Drive{c.Drives[0]} // read-only
		jailed, cleanup, err := stageJail(&c, l)
		if err != nil {
			t.Fatal(err)
		}
		in, err := os.Stat(filepath.Join(l.ChrootDir, jailed.Kernel))
		if err != nil {
			t.Fatal(err)
		}
		orig, _ := os.Stat(c.Kernel)
		if os.SameFile(in, orig) {
			t.Error("a kernel the jail's user cannot read was hard-linked, not copied")
		}
		if st := in.Sys().(*syscall.Stat_t); int(st.Uid) != c.Jailer.UID {
			t.Errorf("the kernel's copy is owned by %d, want the jail's %d", st.Uid, c.Jailer.UID)
		}
		if err := cleanup(); err != nil {
			t.Fatal(err)
		}
		if got := ownerOf(c.Kernel); got != wantKernel {
			t.Errorf("the caller's kernel is now %s, was %s", got, wantKernel)
		}
	})
}

// TestD4JailCgroupDirs: the VMM's cgroups are under the parent cgroup the
// caller gives (so two state roots' VMMs of one ID do not share one), in
// the unified hierarchy with v2 and in each named controller's with v1,
// and the jailer is told the parent.
func TestD4JailCgroupDirs(t *testing.T) {
	tests := []struct {
		name string
		j    JailerConfig
		want []string
	}{
		{"no settings, no cgroup", JailerConfig{CgroupVersion: 2, ParentCgroup: "k-1"}, nil},
		{"v2", JailerConfig{CgroupVersion: 2, ParentCgroup: "k-1", Cgroups: []string{"cpu.max=50000 100000", "memory.max=1"}},
			[]string{"/sys/fs/cgroup/k-1/vm"}},
		{"v1", JailerConfig{CgroupVersion: 1, ParentCgroup: "k-1", Cgroups: []string{"cpu.cfs_quota_us=1", "cpu.cfs_period_us=2", "memory.limit_in_bytes=3"}},
			[]string{"/sys/fs/cgroup/cpu/k-1/vm", "/sys/fs/cgroup/memory/k-1/vm"}},
		{"default parent", JailerConfig{CgroupVersion: 2, Cgroups: []string{"memory.max=1"}},
			[]string{"/sys/fs/cgroup/firecracker/vm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Firecracker: "/bin/firecracker", ID: "vm", Jailer: &tt.j}
			if got := jailCgroupDirs(&c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("jailCgroupDirs() = %q, want %q", got, tt.want)
			}
			args := jailerArgs(&c, newJailLayout(&c))
			i := slices.Index(args, "--parent-cgroup")
			if tt.j.ParentCgroup != "" && (i < 0 || args[i+1] != tt.j.ParentCgroup) {
				t.Errorf("jailerArgs() = %q, want --parent-cgroup %s", args, tt.j.ParentCgroup)
			}
		})
	}
	c := Config{Firecracker: "/bin/firecracker", ID: "vm", KernelArgs: "x", Jailer: &JailerConfig{Path: "/bin/true", ParentCgroup: "/abs"}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "jailer.parent_cgroup") {
		t.Errorf("Validate() with an absolute parent cgroup: %v, want a jailer.parent_cgroup error", err)
	}
}
