package shim

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-vm/kindling/agent/container"
)

func ptr[T any](v T) *T { return &v }

func TestResources(t *testing.T) {
	tests := []struct {
		name      string
		res       *specs.LinuxResources
		ann       map[string]string
		vcpus, mb int
	}{
		{"no limits", nil, nil, 1, 512},
		{"half a CPU", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](50000), Period: ptr[uint64](100000)}}, nil, 2, 512},
		{"two CPUs", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](200000), Period: ptr[uint64](100000)}}, nil, 3, 512},
		{"unlimited quota", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](-1), Period: ptr[uint64](100000)}}, nil, 1, 512},
		{"1 GiB", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](1 << 30)}}, nil, 1, 256 + 1024},
		{"odd bytes round up", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](100<<20 + 1)}}, nil, 1, 256 + 101},
		{"pod totals win", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](10000), Period: ptr[uint64](100000)}},
			map[string]string{annSandboxCPUQuota: "300000", annSandboxCPUPeriod: "100000", annSandboxMemory: "536870912"}, 4, 256 + 512},
		{"bad annotations ignored", nil, map[string]string{annSandboxCPUQuota: "x", annSandboxMemory: "-5"}, 1, 512},
		{"capped vCPUs", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](100 * 100000), Period: ptr[uint64](100000)}}, nil, 32, 512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := &specs.Spec{Linux: &specs.Linux{Resources: tt.res}, Annotations: tt.ann}
			v, m := resources(sp)
			if v != tt.vcpus || m != tt.mb {
				t.Errorf("resources = %d vCPUs, %d MiB; want %d, %d", v, m, tt.vcpus, tt.mb)
			}
		})
	}
}

func TestSandboxIDIsStableAndValid(t *testing.T) {
	a, b := SandboxID("default", "web"), SandboxID("default", "web")
	if a != b {
		t.Fatalf("SandboxID not stable: %s, %s", a, b)
	}
	if a == SandboxID("other", "web") || a == SandboxID("default", "web2") {
		t.Errorf("SandboxID collides across namespace or id")
	}
	if len(a) > 64 || !strings.HasPrefix(a, "ctd-") {
		t.Errorf("SandboxID %q: want ctd- and at most 64 bytes", a)
	}
}

func TestInitSpec(t *testing.T) {
	sp := &specs.Spec{
		Hostname: "h",
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Process:  &specs.Process{Args: []string{"/bin/app"}, Env: []string{"A=1"}, Cwd: "/w", User: specs.User{UID: 5, GID: 6, AdditionalGids: []uint32{7}}},
	}
	mounts := []container.Mount{{Destination: "/run", Type: "tmpfs"}, {Destination: "/etc/hosts", Type: "bind", Source: "/run/kindling/volumes/k/f"}}
	cs, err := initSpec(&taskState{id: "c1", spec: sp, mounts: mounts})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Mounts) != 2 || cs.Mounts[1].Source != mounts[1].Source {
		t.Errorf("mounts sent to the guest = %+v, want the task's %+v", cs.Mounts, mounts)
	}
	if cs.Rootfs.Device != rootfsDevice || !cs.Rootfs.ReadOnly || cs.Hostname != "h" || cs.UID != 5 || cs.GID != 6 || cs.Cwd != "/w" || len(cs.AdditionalGIDs) != 1 {
		t.Errorf("spec = %+v", cs)
	}
}

// planMounts: tmpfs kept, the standard mounts left to the guest, host
// files and read-only directories copied, read-write directories refused
// unless they are a kubelet emptyDir, what cannot be copied refused.
func TestPlanMounts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts")
	tree := filepath.Join(dir, "conf")
	empty := filepath.Join(dir, "pods/u1/volumes/kubernetes.io~empty-dir/cache")
	for _, d := range []string{tree, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(tree, link); err != nil {
		t.Fatal(err)
	}
	rbind := func(dst, src string, opts ...string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: append([]string{"rbind", "rprivate"}, opts...)}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name  string
		mount specs.Mount
		want  string // the guest mount's type and source, or the error
	}{
		{"proc", specs.Mount{Destination: "/proc", Type: "proc", Source: "proc"}, ""},
		{"shm", specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"}, ""},
		{"tmpfs", specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}}, "tmpfs "},
		{"rw file", rbind("/etc/hosts", file, "rw"), "bind /run/kindling/volumes/*/f"},
		{"ro dir", rbind("/etc/conf", tree, "ro"), "bind /run/kindling/volumes/* ro"},
		{"ro dir through a link", rbind("/etc/conf", link, "ro"), "bind /run/kindling/volumes/* ro"},
		{"rw emptyDir", rbind("/cache", empty, "rw"), "bind /run/kindling/volumes/*"},
		{"rw dir", rbind("/data", tree, "rw"), "error: read-write host directory " + tree + ": kindling cannot share a host directory live"},
		{"missing", rbind("/x", filepath.Join(dir, "nope"), "ro"), "error: bind mount /x: source"},
		{"device", rbind("/dev/null2", "/dev/null", "ro"), "error: source /dev/null is a device: only files and directories"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := planMounts(&specs.Spec{Mounts: []specs.Mount{tt.mount}}, log, "c1")
			var got string
			switch {
			case err != nil:
				got = "error: " + err.Error()
			case len(plan) == 1:
				got = plan[0].Type + " " + plan[0].Source
				if len(plan[0].Options) > 0 && plan[0].Type == "bind" {
					got += " " + strings.Join(plan[0].Options, ",")
				}
			case len(plan) > 1:
				t.Fatalf("plan = %+v, want at most one mount", plan)
			}
			if ok, _ := filepath.Match(tt.want, got); !ok && !(strings.HasPrefix(tt.want, "error: ") && strings.HasPrefix(got, "error: ") && strings.Contains(got, tt.want[len("error: "):])) {
				t.Errorf("planMounts = %q, want %q", got, tt.want)
			}
		})
	}
	// Two mounts of one host path share one copy in the guest.
	plan, err := planMounts(&specs.Spec{Mounts: []specs.Mount{rbind("/a", tree, "ro"), rbind("/b", link, "ro")}}, log, "c1")
	if err != nil || len(plan) != 2 || plan[0].key != plan[1].key {
		t.Errorf("two mounts of one directory: %+v, %v; want one key", plan, err)
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"ok", Config{Root: dir, Kernel: file, Agent: file, NoJailer: true}, ""},
		{"jailer", Config{Root: dir, Kernel: file, Agent: file, Jailer: file}, ""},
		{"missing jailer", Config{Root: dir, Kernel: file, Agent: file, Jailer: filepath.Join(dir, "nope")}, "no such file or directory (set KINDLING_JAILER)"},
		{"jailer and no jailer", Config{Root: dir, Kernel: file, Agent: file, Jailer: file, NoJailer: true}, "both KINDLING_JAILER=" + file + " and KINDLING_NO_JAILER are set"},
		{"relative root", Config{Root: "rel", Kernel: file, Agent: file}, "want an absolute path (set KINDLING_SHIM_ROOT)"},
		{"no kernel", Config{Root: dir, Agent: file}, "set KINDLING_KERNEL"},
		{"missing kernel", Config{Root: dir, Kernel: filepath.Join(dir, "nope"), Agent: file}, "no such file or directory (set KINDLING_KERNEL)"},
		{"agent is a directory", Config{Root: dir, Kernel: file, Agent: dir}, "not a regular file (set KINDLING_AGENT)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
