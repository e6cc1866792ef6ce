package shim

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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

func TestInitSpecMounts(t *testing.T) {
	sp := &specs.Spec{
		Hostname: "h",
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Process:  &specs.Process{Args: []string{"/bin/app"}, Env: []string{"A=1"}, Cwd: "/w", User: specs.User{UID: 5, GID: 6, AdditionalGids: []uint32{7}}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/x/hosts", Options: []string{"rbind"}},
		},
	}
	cs, err := initSpec(&taskState{id: "c1", spec: sp}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Mounts) != 1 || cs.Mounts[0].Destination != "/run" || strings.Join(cs.Mounts[0].Options, ",") != "nosuid,size=1m" {
		t.Errorf("mounts sent to the guest = %+v, want only the /run tmpfs", cs.Mounts)
	}
	if cs.Rootfs.Device != rootfsDevice || !cs.Rootfs.ReadOnly || cs.Hostname != "h" || cs.UID != 5 || cs.GID != 6 || cs.Cwd != "/w" || len(cs.AdditionalGIDs) != 1 {
		t.Errorf("spec = %+v", cs)
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
		{"ok", Config{Root: dir, Kernel: file, Agent: file}, ""},
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
