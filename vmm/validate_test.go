package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
)

// fixture is a directory of files a valid Config points at.
type fixture struct {
	dir         string // short, so that socket paths in it fit
	firecracker string // executable, named firecracker
	jailer      string // executable
	kernel      string
	initrd      string
	rootfs      string
	data        string
	plain       string // a regular file that is not executable
}

// newFixture creates the files under a short directory in os.TempDir and
// removes them at cleanup.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "kv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fixture{
		dir:         dir,
		firecracker: filepath.Join(dir, "firecracker"),
		jailer:      filepath.Join(dir, "jailer"),
		kernel:      filepath.Join(dir, "vmlinux"),
		initrd:      filepath.Join(dir, "initrd"),
		rootfs:      filepath.Join(dir, "rootfs.ext4"),
		data:        filepath.Join(dir, "data.img"),
		plain:       filepath.Join(dir, "plain"),
	}
	for _, p := range []string{f.firecracker, f.jailer} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{f.kernel, f.initrd, f.rootfs, f.data, f.plain} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := guest.WriteFile(f.kernel, guest.Options{Message: "fixture"}); err != nil { // Validate checks the kernel's format
		t.Fatal(err)
	}
	return f
}

// config returns a valid Config that uses every kind of device.
func (f *fixture) config() Config {
	bucket := &TokenBucket{Size: 1 << 20, OneTimeBurst: 1 << 10, RefillTime: 100 * time.Millisecond}
	return Config{
		Firecracker:  f.firecracker,
		ID:           "vm-1",
		RunDir:       filepath.Join(f.dir, "run"),
		Kernel:       f.kernel,
		Initrd:       f.initrd,
		KernelArgs:   "quiet",
		VCPUs:        2,
		MemoryMiB:    256,
		SMT:          true,
		CPUTemplate:  "T2",
		Placeholders: 4,
		Drives: []Drive{
			{ID: "rootfs", Path: f.rootfs, Root: true, ReadOnly: true, PartUUID: "0eaa91a0-01", CacheType: CacheWriteback, IOEngine: IOEngineAsync},
			{ID: "data_1", Path: f.data, CacheType: CacheUnsafe, IOEngine: IOEngineSync, RateLimiter: &RateLimiter{Bandwidth: bucket, Ops: bucket}},
		},
		NetworkInterfaces: []NetworkInterface{
			{ID: "eth0", TapName: "tap-kd0", MAC: "06:00:ac:10:00:02", RxRateLimiter: &RateLimiter{Bandwidth: bucket}, TxRateLimiter: &RateLimiter{Ops: bucket}},
		},
		Vsock:         &Vsock{CID: 3, Path: filepath.Join(f.dir, "v.sock")},
		Entropy:       &Entropy{RateLimiter: &RateLimiter{Bandwidth: bucket}},
		Balloon:       &Balloon{AmountMiB: 64, DeflateOnOOM: true, StatsInterval: time.Second},
		MemoryHotplug: &MemoryHotplug{TotalMiB: 1024, SlotMiB: 128, BlockMiB: 2},
		LogLevel:      "Debug",
		MetricsPath:   filepath.Join(f.dir, "metrics"),
	}
}

// jailerConfig returns a valid JailerConfig.
func (f *fixture) jailerConfig() *JailerConfig {
	return &JailerConfig{Path: f.jailer, UID: 12345, GID: 12345, ChrootBase: filepath.Join(f.dir, "jail"), CgroupVersion: 2,
		Cgroups: []string{"cpu.max=50000 100000"}, NetNS: f.plain}
}

// configFields returns the Field of every *ConfigError joined in err,
// failing the test if err holds anything else.
func configFields(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("%v does not match ErrInvalidConfig", err)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate returned %T, want an errors.Join", err)
	}
	var fields []string
	for _, e := range joined.Unwrap() {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("Validate returned %T (%v), want *ConfigError", e, e)
		}
		if strings.Contains(ce.Error(), "\n") {
			t.Errorf("message %q is not one line", ce.Error())
		}
		fields = append(fields, ce.Field)
	}
	return fields
}

func TestValidateValid(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		modify func(c *Config)
	}{
		{"every device", func(c *Config) {}},
		{"minimal", func(c *Config) { *c = Config{Firecracker: f.firecracker, Kernel: f.kernel, RunDir: f.dir} }},
		{"defaults unset", func(c *Config) { c.ID, c.VCPUs, c.MemoryMiB, c.LogLevel = "", 0, 0, "" }},
		{"defaults applied", func(c *Config) { *c = c.withDefaults() }},
		{"run dir exists", func(c *Config) { c.RunDir = f.dir }},
		{"output files in the run dir to be", func(c *Config) {
			c.LogPath, c.MetricsPath, c.ConsolePath = c.RunDir+"/l", c.RunDir+"/m", c.RunDir+"/c"
		}},
		{"output files exist", func(c *Config) { c.LogPath, c.MetricsPath, c.ConsolePath = f.plain, f.plain, f.plain }},
		{"smt one vcpu", func(c *Config) { c.VCPUs = 1 }},
		{"smt off odd vcpus", func(c *Config) { c.SMT, c.VCPUs = false, 3 }},
		{"max vcpus", func(c *Config) { c.VCPUs = 32 }},
		{"log level any case", func(c *Config) { c.LogLevel = "warning" }},
		{"cpu template none", func(c *Config) { c.CPUTemplate = "None" }},
		{"id 64", func(c *Config) { c.ID = strings.Repeat("a", 64) }},
		{"tap 15", func(c *Config) { c.NetworkInterfaces[0].TapName = strings.Repeat("t", 15) }},
		{"no mac", func(c *Config) { c.NetworkInterfaces[0].MAC = "" }},
		{"hotplug defaults", func(c *Config) { c.MemoryHotplug = &MemoryHotplug{TotalMiB: 256} }},
		{"hotplug block equals slot", func(c *Config) { c.MemoryHotplug = &MemoryHotplug{TotalMiB: 512, SlotMiB: 256, BlockMiB: 256} }},
		{"balloon whole memory", func(c *Config) { c.Balloon.AmountMiB = 256 }},
		{"balloon default memory", func(c *Config) { c.MemoryMiB, c.Balloon.AmountMiB = 0, 128 }},
		{"bucket empty", func(c *Config) { c.Entropy.RateLimiter.Bandwidth = &TokenBucket{} }},
		{"pool ID-like but not reserved", func(c *Config) { c.Drives[1].ID = "pool" }},
		{"mmds", func(c *Config) { c.MMDS = &MMDS{Data: []byte(`{"latest":{"meta-data":{"id":"a"}}}`)} }},
		{"mmds v1 on one interface", func(c *Config) { c.MMDS = &MMDS{Version: "V1", Interfaces: []string{"eth0"}} }},
		{"jailer", func(c *Config) { c.Jailer = f.jailerConfig() }},
		{"jailer defaults", func(c *Config) {
			c.Jailer = &JailerConfig{Path: f.jailer}
			c.Drives[1].ReadOnly = true // /srv/jailer may be on another filesystem
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.config()
			tt.modify(&c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidateInvalid(t *testing.T) {
	f := newFixture(t)
	long := func(n int) string { return filepath.Join(f.dir, strings.Repeat("d", n)) }
	if err := os.Mkdir(long(100), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string // the fields reported, in order
	}{
		{"firecracker missing", func(c *Config) { c.Firecracker = "" }, []string{"firecracker"}},
		{"firecracker no such file", func(c *Config) { c.Firecracker = f.dir + "/nope" }, []string{"firecracker"}},
		{"firecracker directory", func(c *Config) { c.Firecracker = f.dir }, []string{"firecracker"}},
		{"firecracker not executable", func(c *Config) { c.Firecracker = f.plain }, []string{"firecracker"}},
		{"kernel missing", func(c *Config) { c.Kernel = "" }, []string{"kernel"}},
		{"kernel no such file", func(c *Config) { c.Kernel = "/x/vmlinux" }, []string{"kernel"}},
		{"kernel directory", func(c *Config) { c.Kernel = f.dir }, []string{"kernel"}},
		{"initrd no such file", func(c *Config) { c.Initrd = f.dir + "/nope" }, []string{"initrd"}},
		{"initrd directory", func(c *Config) { c.Initrd = f.dir }, []string{"initrd"}},
		{"id bad character", func(c *Config) { c.ID = "vm_1" }, []string{"id"}},
		{"id too long", func(c *Config) { c.ID = strings.Repeat("a", 65) }, []string{"id"}},
		{"run dir missing", func(c *Config) { c.RunDir = "" }, []string{"run_dir"}},
		{"run dir parent missing", func(c *Config) { c.RunDir = f.dir + "/a/b" }, []string{"run_dir"}},
		{"run dir is a file", func(c *Config) { c.RunDir = f.plain }, []string{"run_dir"}},
		{"socket path too long", func(c *Config) { c.SocketPath = long(100) + "/api.sock" }, []string{"socket_path"}},
		{"derived socket path too long", func(c *Config) { c.RunDir = long(100) }, []string{"socket_path"}},
		{"log path directory", func(c *Config) { c.LogPath = f.dir }, []string{"log_path"}},
		{"log path directory missing", func(c *Config) { c.LogPath = f.dir + "/nope/fc.log" }, []string{"log_path"}},
		{"metrics path directory", func(c *Config) { c.MetricsPath = f.dir }, []string{"metrics_path"}},
		{"metrics path directory missing", func(c *Config) { c.MetricsPath = f.dir + "/nope/m" }, []string{"metrics_path"}},
		{"console path directory", func(c *Config) { c.ConsolePath = f.dir }, []string{"console_path"}},
		{"console path directory missing", func(c *Config) { c.ConsolePath = f.dir + "/nope/console" }, []string{"console_path"}},
		{"vcpus over", func(c *Config) { c.VCPUs = 40 }, []string{"vcpus"}},
		{"vcpus negative", func(c *Config) { c.VCPUs = -1 }, []string{"vcpus"}},
		{"vcpus odd with smt", func(c *Config) { c.VCPUs = 3 }, []string{"vcpus"}},
		{"memory negative", func(c *Config) { c.MemoryMiB = -1 }, []string{"memory_mib", "balloon.amount_mib"}},
		{"memory over", func(c *Config) { c.MemoryMiB = 1<<20 + 1 }, []string{"memory_mib"}},
		{"cpu template unknown", func(c *Config) { c.CPUTemplate = "t2" }, []string{"cpu_template"}},
		{"mmds version unknown", func(c *Config) { c.MMDS = &MMDS{Version: "V3"} }, []string{"mmds.version"}},
		{"mmds without interfaces", func(c *Config) { c.NetworkInterfaces, c.MMDS = nil, &MMDS{} }, []string{"mmds"}},
		{"mmds unknown interface", func(c *Config) { c.MMDS = &MMDS{Interfaces: []string{"eth9"}} }, []string{"mmds.interfaces[0]"}},
		{"mmds data not an object", func(c *Config) { c.MMDS = &MMDS{Data: []byte(`[1, 2]`)} }, []string{"mmds.data"}},
		{"mmds data not JSON", func(c *Config) { c.MMDS = &MMDS{Data: []byte(`{`)} }, []string{"mmds.data"}},
		{"placeholders negative", func(c *Config) { c.Placeholders = -1 }, []string{"placeholders"}},
		{"placeholders over", func(c *Config) { c.Placeholders = 33 }, []string{"placeholders", "devices"}},
		{"too many devices", func(c *Config) { c.Placeholders = 13 }, []string{"devices"}},
		{"drive id missing", func(c *Config) { c.Drives[1].ID = "" }, []string{"drives[1].id"}},
		{"drive id bad character", func(c *Config) { c.Drives[1].ID = "data-1" }, []string{"drives[1].id"}},
		{"drive id too long", func(c *Config) { c.Drives[1].ID = strings.Repeat("a", 65) }, []string{"drives[1].id"}},
		{"drive id duplicate", func(c *Config) { c.Drives[1].ID = "rootfs" }, []string{"drives[1].id"}},
		{"drive id reserved", func(c *Config) { c.Drives[1].ID = "pool3" }, []string{"drives[1].id"}},
		{"drive path missing", func(c *Config) { c.Drives[1].Path = "" }, []string{"drives[1].path"}},
		{"drive path no such file", func(c *Config) { c.Drives[1].Path = f.dir + "/nope" }, []string{"drives[1].path"}},
		{"drive path directory", func(c *Config) { c.Drives[1].Path = f.dir }, []string{"drives[1].path"}},
		{"two root drives", func(c *Config) { c.Drives[1].Root = true }, []string{"drives[1].root"}},
		{"part uuid not root", func(c *Config) { c.Drives[1].PartUUID = "abcd" }, []string{"drives[1].part_uuid"}},
		{"part uuid bad", func(c *Config) { c.Drives[0].PartUUID = "xyz" }, []string{"drives[0].part_uuid"}},
		{"cache type", func(c *Config) { c.Drives[0].CacheType = "unsafe" }, []string{"drives[0].cache_type"}},
		{"io engine", func(c *Config) { c.Drives[0].IOEngine = "Uring" }, []string{"drives[0].io_engine"}},
		{"bucket size negative", func(c *Config) { c.Drives[1].RateLimiter = &RateLimiter{Bandwidth: &TokenBucket{Size: -1}} },
			[]string{"drives[1].rate_limiter.bandwidth.size"}},
		{"bucket burst negative", func(c *Config) {
			c.Drives[1].RateLimiter = &RateLimiter{Ops: &TokenBucket{Size: 1, OneTimeBurst: -1, RefillTime: time.Second}}
		}, []string{"drives[1].rate_limiter.ops.one_time_burst"}},
		{"bucket refill negative", func(c *Config) { c.Drives[1].RateLimiter = &RateLimiter{Ops: &TokenBucket{RefillTime: -time.Second}} },
			[]string{"drives[1].rate_limiter.ops.refill_time"}},
		{"bucket refill zero", func(c *Config) { c.Drives[1].RateLimiter = &RateLimiter{Ops: &TokenBucket{Size: 10}} },
			[]string{"drives[1].rate_limiter.ops.refill_time"}},
		{"bucket refill sub-millisecond", func(c *Config) {
			c.Drives[1].RateLimiter = &RateLimiter{Ops: &TokenBucket{Size: 10, RefillTime: 1500 * time.Microsecond}}
		}, []string{"drives[1].rate_limiter.ops.refill_time"}},
		{"net rx bucket", func(c *Config) { c.NetworkInterfaces[0].RxRateLimiter.Bandwidth = &TokenBucket{Size: -5} },
			[]string{"network_interfaces[0].rx_rate_limiter.bandwidth.size"}},
		{"net tx bucket", func(c *Config) { c.NetworkInterfaces[0].TxRateLimiter.Ops = &TokenBucket{Size: 5} },
			[]string{"network_interfaces[0].tx_rate_limiter.ops.refill_time"}},
		{"entropy bucket", func(c *Config) { c.Entropy.RateLimiter.Ops = &TokenBucket{Size: -1} },
			[]string{"entropy.rate_limiter.ops.size"}},
		{"iface id missing", func(c *Config) { c.NetworkInterfaces[0].ID = "" }, []string{"network_interfaces[0].id"}},
		{"iface id bad", func(c *Config) { c.NetworkInterfaces[0].ID = "eth.0" }, []string{"network_interfaces[0].id"}},
		{"iface id duplicate", func(c *Config) {
			c.NetworkInterfaces = append(c.NetworkInterfaces, NetworkInterface{ID: "eth0", TapName: "tap-kd1"})
		}, []string{"network_interfaces[1].id"}},
		{"tap missing", func(c *Config) { c.NetworkInterfaces[0].TapName = "" }, []string{"network_interfaces[0].tap_name"}},
		{"tap too long", func(c *Config) { c.NetworkInterfaces[0].TapName = strings.Repeat("t", 16) }, []string{"network_interfaces[0].tap_name"}},
		{"tap slash", func(c *Config) { c.NetworkInterfaces[0].TapName = "tap/0" }, []string{"network_interfaces[0].tap_name"}},
		{"tap colon", func(c *Config) { c.NetworkInterfaces[0].TapName = "tap:0" }, []string{"network_interfaces[0].tap_name"}},
		{"tap space", func(c *Config) { c.NetworkInterfaces[0].TapName = "tap 0" }, []string{"network_interfaces[0].tap_name"}},
		{"tap dot", func(c *Config) { c.NetworkInterfaces[0].TapName = "." }, []string{"network_interfaces[0].tap_name"}},
		{"tap duplicate", func(c *Config) {
			c.NetworkInterfaces = append(c.NetworkInterfaces, NetworkInterface{ID: "eth1", TapName: "tap-kd0"})
		}, []string{"network_interfaces[1].tap_name"}},
		{"mac unparsable", func(c *Config) { c.NetworkInterfaces[0].MAC = "06:00:ac:10:00" }, []string{"network_interfaces[0].mac"}},
		{"mac eight bytes", func(c *Config) { c.NetworkInterfaces[0].MAC = "06:00:ac:10:00:02:00:01" }, []string{"network_interfaces[0].mac"}},
		{"mac multicast", func(c *Config) { c.NetworkInterfaces[0].MAC = "01:00:5e:00:00:01" }, []string{"network_interfaces[0].mac"}},
		{"mac broadcast", func(c *Config) { c.NetworkInterfaces[0].MAC = "ff:ff:ff:ff:ff:ff" }, []string{"network_interfaces[0].mac"}},
		{"mac zero", func(c *Config) { c.NetworkInterfaces[0].MAC = "00:00:00:00:00:00" }, []string{"network_interfaces[0].mac"}},
		{"vsock cid host", func(c *Config) { c.Vsock.CID = 2 }, []string{"vsock.cid"}},
		{"vsock cid any", func(c *Config) { c.Vsock.CID = ^uint32(0) }, []string{"vsock.cid"}},
		{"vsock path missing", func(c *Config) { c.Vsock.Path = "" }, []string{"vsock.path"}},
		{"vsock path too long", func(c *Config) { c.Vsock.Path = long(100) + "/v.sock" }, []string{"vsock.path"}},
		{"balloon over memory", func(c *Config) { c.Balloon.AmountMiB = 257 }, []string{"balloon.amount_mib"}},
		{"balloon over default memory", func(c *Config) { c.MemoryMiB, c.Balloon.AmountMiB = 0, 129 }, []string{"balloon.amount_mib"}},
		{"balloon negative", func(c *Config) { c.Balloon.AmountMiB = -1 }, []string{"balloon.amount_mib"}},
		{"balloon stats fraction", func(c *Config) { c.Balloon.StatsInterval = 1500 * time.Millisecond }, []string{"balloon.stats_interval"}},
		{"balloon stats negative", func(c *Config) { c.Balloon.StatsInterval = -time.Second }, []string{"balloon.stats_interval"}},
		{"balloon stats over", func(c *Config) { c.Balloon.StatsInterval = 65536 * time.Second }, []string{"balloon.stats_interval"}},
		{"hotplug total zero", func(c *Config) { c.MemoryHotplug.TotalMiB = 0 }, []string{"memory_hotplug.total_mib"}},
		{"hotplug total negative", func(c *Config) { c.MemoryHotplug.TotalMiB = -128 }, []string{"memory_hotplug.total_mib"}},
		{"hotplug total not slot multiple", func(c *Config) { c.MemoryHotplug.TotalMiB = 1000 }, []string{"memory_hotplug.total_mib"}},
		{"hotplug total over", func(c *Config) { c.MemoryHotplug.TotalMiB = 1<<20 + 128 }, []string{"memory_hotplug.total_mib"}},
		{"hotplug block not power of two", func(c *Config) { c.MemoryHotplug.BlockMiB = 6 }, []string{"memory_hotplug.block_mib"}},
		{"hotplug block under 2", func(c *Config) { c.MemoryHotplug.BlockMiB = 1 }, []string{"memory_hotplug.block_mib"}},
		{"hotplug block negative", func(c *Config) { c.MemoryHotplug.BlockMiB = -2 }, []string{"memory_hotplug.block_mib"}},
		{"hotplug slot under 128", func(c *Config) { c.MemoryHotplug.SlotMiB = 64 }, []string{"memory_hotplug.slot_mib"}},
		{"hotplug slot not block multiple", func(c *Config) {
			c.MemoryHotplug.SlotMiB, c.MemoryHotplug.BlockMiB, c.MemoryHotplug.TotalMiB = 132, 8, 132
		}, []string{"memory_hotplug.slot_mib"}},
		{"log level", func(c *Config) { c.LogLevel = "Verbose" }, []string{"log_level"}},
		{"jailer path missing", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.Path = "" }, []string{"jailer.path"}},
		{"jailer not executable", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.Path = f.plain }, []string{"jailer.path"}},
		{"jailer firecracker name", func(c *Config) { c.Jailer = f.jailerConfig(); c.Firecracker = f.jailer }, []string{"firecracker"}},
		{"jailer uid negative", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.UID = -1 }, []string{"jailer.uid"}},
		{"jailer gid negative", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.GID = -1 }, []string{"jailer.gid"}},
		{"jailer cgroup version", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.CgroupVersion = 3 }, []string{"jailer.cgroup_version"}},
		{"jailer cgroup setting", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.Cgroups = []string{"cpu.max"} }, []string{"jailer.cgroups[0]"}},
		{"jailer chroot base relative", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.ChrootBase = "jail" }, []string{"jailer.chroot_base"}},
		{"jailer netns missing", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.NetNS = f.dir + "/nope" }, []string{"jailer.netns"}},
		{"jailer socket too long", func(c *Config) { c.Jailer = f.jailerConfig(); c.Jailer.ChrootBase = long(100) }, []string{"jailer.chroot_base", "vsock.path"}},
		{"every problem reported", func(c *Config) { c.Kernel, c.VCPUs, c.LogLevel = "", 99, "x" }, []string{"kernel", "vcpus", "log_level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.config()
			tt.modify(&c)
			err := c.Validate()
			if got := configFields(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("Validate() reported fields %q, want %q; error:\n%v", got, tt.want, err)
			}
		})
	}
}

func TestValidateJailerFilesystem(t *testing.T) {
	f := newFixture(t)
	base := "/dev/shm/kindling-test-never-created" // Validate only stats it
	var a, b syscall.Stat_t
	if syscall.Stat("/dev/shm", &a) != nil || syscall.Stat(f.dir, &b) != nil || a.Dev == b.Dev {
		t.Skip("no /dev/shm on another filesystem than the temporary directory")
	}
	tests := []struct {
		name     string
		readOnly bool
		want     []string
	}{
		{"writable drive refused", false, []string{"drives[1].path"}},
		{"read-only drive accepted", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.config()
			c.Jailer = f.jailerConfig()
			c.Jailer.ChrootBase = base
			c.Drives[1].ReadOnly = tt.readOnly
			if got := configFields(t, c.Validate()); !slices.Equal(got, tt.want) {
				t.Fatalf("Validate() reported fields %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateMessage(t *testing.T) {
	f := newFixture(t)
	c := f.config()
	c.Kernel = "/x/vmlinux"
	c.VCPUs = 40
	got := c.Validate().Error()
	want := `kernel "/x/vmlinux": no such file (give the path of an uncompressed kernel image)` + "\n" + "vcpus 40: out of range 1–32"
	if got != want {
		t.Fatalf("Validate().Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestWithDefaults(t *testing.T) {
	f := newFixture(t)
	c := Config{
		RunDir:  "/run/k",
		Drives:  []Drive{{ID: "a", Path: "rel.img"}},
		Vsock:   &Vsock{CID: 3, Path: "v.sock"},
		Jailer:  &JailerConfig{Path: f.jailer},
		Kernel:  "vmlinux",
		Initrd:  "",
		Balloon: &Balloon{},
	}
	d := c.withDefaults()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"vcpus", d.VCPUs, 1},
		{"memory", d.MemoryMiB, 128},
		{"log level", d.LogLevel, "Info"},
		{"socket", d.SocketPath, "/run/k/firecracker.sock"},
		{"log", d.LogPath, "/run/k/firecracker.log"},
		{"kernel made absolute", d.Kernel, filepath.Join(wd, "vmlinux")},
		{"initrd left empty", d.Initrd, ""},
		{"drive made absolute", d.Drives[0].Path, filepath.Join(wd, "rel.img")},
		{"vsock made absolute", d.Vsock.Path, filepath.Join(wd, "v.sock")},
		{"chroot base", d.Jailer.ChrootBase, "/srv/jailer"},
		{"cgroup version is the host's", d.Jailer.CgroupVersion, HostCgroupVersion()},
		{"caller's drive unchanged", c.Drives[0].Path, "rel.img"},
		{"caller's vsock unchanged", c.Vsock.Path, "v.sock"},
		{"caller's jailer unchanged", c.Jailer.ChrootBase, ""},
		{"caller's config unchanged", c.SocketPath, ""},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if !vmIDRe.MatchString(d.ID) {
		t.Errorf("default ID %q is not a valid ID", d.ID)
	}
	if again := c.withDefaults(); again.ID == d.ID {
		t.Errorf("two default IDs are both %q", d.ID)
	}
	set := Config{ID: "mine", VCPUs: 4, MemoryMiB: 512, LogLevel: "Debug", RunDir: "/r", SocketPath: "/s.sock", LogPath: "/l.log"}
	if got := set.withDefaults(); got.ID != "mine" || got.VCPUs != 4 || got.MemoryMiB != 512 || got.LogLevel != "Debug" ||
		got.SocketPath != "/s.sock" || got.LogPath != "/l.log" {
		t.Errorf("withDefaults overrode set values: %+v", got)
	}
}
