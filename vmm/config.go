package vmm

import (
	"encoding/json"
	"io"
	"time"
)

// Config describes one Firecracker VMM and the microVM it runs. Build one,
// call Validate (New does), and hand it to New.
//
// Config and the device types it holds are stored (in MachineState and
// Snapshot, and so in kindling's state files and manifests): every field
// has an explicit snake_case JSON name, and renaming a Go field changes
// nothing on disk. Files written before the names were explicit (with the
// Go field names as keys) are still read; see config_json.go.
type Config struct {
	// Firecracker is the path of the firecracker executable. Required.
	Firecracker string `json:"firecracker"`
	// Jailer, when non-nil, runs Firecracker through the jailer.
	Jailer *JailerConfig `json:"jailer,omitempty"`

	// ID names the VMM (Firecracker's --id): 1–64 of [A-Za-z0-9-]
	// (default: a short random one).
	ID string `json:"id"`
	// RunDir is the directory for the API socket, Firecracker's log and
	// metrics files. Required; created if missing. The caller owns it.
	RunDir string `json:"run_dir"`
	// SocketPath overrides the API socket path (default RunDir/firecracker.sock).
	// It must be shorter than 108 bytes. Under the jailer the socket is
	// <chroot>/firecracker.sock instead, and that path must be short enough.
	SocketPath string `json:"socket_path,omitempty"`

	// Kernel is the guest kernel image (an uncompressed ELF). Required.
	Kernel string `json:"kernel"`
	// Initrd is an optional initial ramdisk.
	Initrd string `json:"initrd,omitempty"`
	// KernelArgs are merged over DefaultKernelArgs and the Root drive's
	// root= (see BootArgs and MergeKernelArgs): a key given here wins.
	KernelArgs string `json:"kernel_args,omitempty"`

	// VCPUs is the number of vCPUs, 1–32 (default 1).
	VCPUs int `json:"vcpus"`
	// MemoryMiB is the guest memory in MiB (default 128).
	MemoryMiB int `json:"memory_mib"`
	// SMT enables simultaneous multithreading in the guest.
	SMT bool `json:"smt,omitempty"`
	// CPUTemplate names a static CPU template (e.g. "T2"); empty for none.
	CPUTemplate string `json:"cpu_template,omitempty"`
	// TrackDirtyPages makes Firecracker track the guest pages written since
	// the last snapshot, which diff snapshots need (releases before 1.13
	// refuse a diff snapshot without it). It costs some guest performance.
	TrackDirtyPages bool `json:"track_dirty_pages,omitempty"`

	// Drives are attached before boot, the Root one first, then the others
	// in order. At most one is Root. IDs pool0, pool1 … are reserved for
	// the placeholder pool.
	Drives []Drive `json:"drives,omitempty"`
	// Placeholders is the size of the hotplug pool: empty drives attached
	// before boot that AttachDrive later swaps for real ones.
	Placeholders int `json:"placeholders,omitempty"`
	// NetworkInterfaces are tap-backed virtio-net devices.
	NetworkInterfaces []NetworkInterface `json:"network_interfaces,omitempty"`
	// Vsock, when non-nil, adds a virtio-vsock device.
	Vsock *Vsock `json:"vsock,omitempty"`
	// Entropy, when non-nil, adds a virtio-rng device (Firecracker ≥ 1.4).
	Entropy *Entropy `json:"entropy,omitempty"`
	// Balloon, when non-nil, adds a memory balloon device.
	Balloon *Balloon `json:"balloon,omitempty"`
	// MemoryHotplug, when non-nil, adds a virtio-mem device (Firecracker ≥ 1.14).
	MemoryHotplug *MemoryHotplug `json:"memory_hotplug,omitempty"`
	// MMDS, when non-nil, gives the guest Firecracker's microVM metadata
	// service (at 169.254.169.254) through network interfaces.
	MMDS *MMDS `json:"mmds,omitempty"`

	// LogLevel is Firecracker's log level: Error, Warning, Info (default), Debug, Trace, Off.
	LogLevel string `json:"log_level,omitempty"`
	// LogPath is Firecracker's log file (default RunDir/firecracker.log).
	// Under the jailer, the log and metrics files are inside the chroot.
	LogPath string `json:"log_path,omitempty"`
	// MetricsPath, when set, is where Firecracker writes its metrics.
	MetricsPath string `json:"metrics_path,omitempty"`

	// ConsolePath, when set, receives the guest's serial console output.
	ConsolePath string `json:"console_path,omitempty"`
	// Console, when non-nil and ConsolePath is empty, receives the console output.
	Console io.Writer `json:"-"`
	// WaitConsole, when set, makes Start return only once the console has
	// shown this text (bounded by Start's context).
	WaitConsole string `json:"wait_console,omitempty"`

	// Env is added to the environment Firecracker runs with.
	Env []string `json:"env,omitempty"`

	// NetNS, when set, is the path of a network namespace (such as
	// /run/netns/NAME) that Firecracker runs in; its taps must be there.
	// Under the jailer use JailerConfig.NetNS instead.
	NetNS string `json:"netns,omitempty"`
}

// MMDS is the microVM metadata service: a JSON document the guest reads
// over HTTP through the network interfaces named.
type MMDS struct {
	// Version is the protocol, "V1" or "V2" (default V2, which asks the
	// guest for a session token).
	Version string `json:"version,omitempty"`
	// Interfaces are the IDs of the NetworkInterfaces that reach it;
	// empty for all of them.
	Interfaces []string `json:"interfaces,omitempty"`
	// Data is the document, a JSON object; empty for none yet.
	Data json.RawMessage `json:"data,omitempty"`
}

// Drive is a virtio-block device.
type Drive struct {
	// ID is the drive's name in Firecracker: 1–64 of [A-Za-z0-9_].
	ID string `json:"id"`
	// Path is the backing file on the host. Required.
	Path string `json:"path"`
	// ReadOnly attaches the drive read-only.
	ReadOnly bool `json:"read_only,omitempty"`
	// Root makes this the root device (root=/dev/vda or PARTUUID).
	Root bool `json:"root,omitempty"`
	// PartUUID selects a partition of a root device.
	PartUUID string `json:"part_uuid,omitempty"`
	// CacheType is Unsafe (default) or Writeback.
	CacheType CacheType `json:"cache_type,omitempty"`
	// IOEngine is Sync (default) or Async.
	IOEngine IOEngine `json:"io_engine,omitempty"`
	// RateLimiter limits the drive's I/O.
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// CacheType is a drive's host cache policy.
type CacheType string

// Cache types.
const (
	CacheUnsafe    CacheType = "Unsafe"
	CacheWriteback CacheType = "Writeback"
)

// IOEngine is a drive's host I/O engine.
type IOEngine string

// I/O engines.
const (
	IOEngineSync  IOEngine = "Sync"
	IOEngineAsync IOEngine = "Async"
)

// NetworkInterface is a virtio-net device backed by a host tap device.
type NetworkInterface struct {
	// ID is the interface's name in Firecracker: 1–64 of [A-Za-z0-9_].
	ID string `json:"id"`
	// TapName is the host tap device (at most 15 bytes). Required.
	TapName string `json:"tap_name"`
	// MAC is the guest MAC address, unicast; empty lets Firecracker pick.
	MAC string `json:"mac,omitempty"`
	// RxRateLimiter and TxRateLimiter limit the interface's traffic.
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is a virtio-vsock device, exposed on the host as a Unix socket.
type Vsock struct {
	// CID is the guest's context ID (≥ 3).
	CID uint32 `json:"cid"`
	// Path is the host-side Unix socket (shorter than 108 bytes).
	Path string `json:"path"`
}

// Entropy is a virtio-rng device.
type Entropy struct {
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// Balloon is a virtio-balloon device.
type Balloon struct {
	// AmountMiB is the initial balloon size.
	AmountMiB int `json:"amount_mib"`
	// DeflateOnOOM lets the guest deflate the balloon under memory pressure.
	DeflateOnOOM bool `json:"deflate_on_oom,omitempty"`
	// StatsInterval enables balloon statistics at this period (whole seconds).
	StatsInterval time.Duration `json:"stats_interval_ns,omitempty"`
}

// MemoryHotplug is a virtio-mem device.
type MemoryHotplug struct {
	// TotalMiB is the most memory that can be plugged.
	TotalMiB int `json:"total_mib"`
	// SlotMiB and BlockMiB are the slot and block sizes (0 for Firecracker's defaults).
	SlotMiB  int `json:"slot_mib,omitempty"`
	BlockMiB int `json:"block_mib,omitempty"`
}

// RateLimiter limits bandwidth and operations with token buckets.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// TokenBucket is one token bucket of a RateLimiter.
type TokenBucket struct {
	// Size is the bucket's size in bytes or operations.
	Size int64 `json:"size"`
	// OneTimeBurst is an initial extra budget.
	OneTimeBurst int64 `json:"one_time_burst,omitempty"`
	// RefillTime is how long the bucket takes to refill completely.
	RefillTime time.Duration `json:"refill_time_ns"`
}

// JailerConfig runs Firecracker through Firecracker's jailer.
type JailerConfig struct {
	// Path is the jailer executable. Required. The jailer runs only a
	// Firecracker whose file name contains "firecracker".
	Path string `json:"path"`
	// UID and GID are the unprivileged user and group Firecracker runs as.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// ChrootBase is the jailer's --chroot-base-dir (default /srv/jailer).
	ChrootBase string `json:"chroot_base,omitempty"`
	// NetNS is a network namespace path for Firecracker to join.
	NetNS string `json:"netns,omitempty"`
	// CgroupVersion is 1 or 2 (default: the host's, see HostCgroupVersion;
	// always passed to the jailer, whose own default is 1).
	CgroupVersion int `json:"cgroup_version,omitempty"`
	// Cgroups are --cgroup key=value settings, in the files of
	// CgroupVersion (cpu.max, memory.max with 2; cpu.cfs_quota_us,
	// memory.limit_in_bytes with 1). The jailer makes the VMM's cgroup
	// only when there is at least one.
	Cgroups []string `json:"cgroups,omitempty"`
	// ParentCgroup is the cgroup (relative to the hierarchy's root) the
	// VMM's cgroup <ParentCgroup>/<ID> is made in: the jailer's
	// --parent-cgroup (default: the file name of the firecracker
	// executable, as the jailer's).
	ParentCgroup string `json:"parent_cgroup,omitempty"`
	// NewPIDNS runs Firecracker in a new PID namespace.
	NewPIDNS bool `json:"new_pid_ns,omitempty"`
	// SharedDir, on ChrootBase's filesystem, holds the shared copies of
	// read-only files the jail's uid cannot read (a template's memory, a
	// root-owned image): one copy per file, hard-linked into each jail with
	// an ACL entry for its uid, instead of a copy per jail; the jail's
	// removal revokes its entries and removes the copies no jail links
	// (see vmmproc.StageShared). Empty: each jail gets its own copy.
	SharedDir string `json:"shared_dir,omitempty"`
}
