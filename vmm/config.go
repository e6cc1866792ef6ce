package vmm

import (
	"io"
	"time"
)

// Config describes one Firecracker VMM and the microVM it runs. Build one,
// call Validate (New does), and hand it to New.
type Config struct {
	// Firecracker is the path of the firecracker executable. Required.
	Firecracker string
	// Jailer, when non-nil, runs Firecracker through the jailer.
	Jailer *JailerConfig

	// ID names the VMM (Firecracker's --id): 1–64 of [A-Za-z0-9-]
	// (default: a short random one).
	ID string
	// RunDir is the directory for the API socket, Firecracker's log and
	// metrics files. Required; created if missing. The caller owns it.
	RunDir string
	// SocketPath overrides the API socket path (default RunDir/firecracker.sock).
	// It must be shorter than 108 bytes. Under the jailer the socket is
	// <chroot>/firecracker.sock instead, and that path must be short enough.
	SocketPath string

	// Kernel is the guest kernel image (an uncompressed ELF). Required.
	Kernel string
	// Initrd is an optional initial ramdisk.
	Initrd string
	// KernelArgs are merged over DefaultKernelArgs and the Root drive's
	// root= (see BootArgs and MergeKernelArgs): a key given here wins.
	KernelArgs string

	// VCPUs is the number of vCPUs, 1–32 (default 1).
	VCPUs int
	// MemoryMiB is the guest memory in MiB (default 128).
	MemoryMiB int
	// SMT enables simultaneous multithreading in the guest.
	SMT bool
	// CPUTemplate names a static CPU template (e.g. "T2"); empty for none.
	CPUTemplate string
	// TrackDirtyPages makes Firecracker track the guest pages written since
	// the last snapshot, which diff snapshots need (releases before 1.13
	// refuse a diff snapshot without it). It costs some guest performance.
	TrackDirtyPages bool

	// Drives are attached before boot, the Root one first, then the others
	// in order. At most one is Root. IDs pool0, pool1 … are reserved for
	// the placeholder pool.
	Drives []Drive
	// Placeholders is the size of the hotplug pool: empty drives attached
	// before boot that AttachDrive later swaps for real ones.
	Placeholders int
	// NetworkInterfaces are tap-backed virtio-net devices.
	NetworkInterfaces []NetworkInterface
	// Vsock, when non-nil, adds a virtio-vsock device.
	Vsock *Vsock
	// Entropy, when non-nil, adds a virtio-rng device (Firecracker ≥ 1.4).
	Entropy *Entropy
	// Balloon, when non-nil, adds a memory balloon device.
	Balloon *Balloon
	// MemoryHotplug, when non-nil, adds a virtio-mem device (Firecracker ≥ 1.14).
	MemoryHotplug *MemoryHotplug

	// LogLevel is Firecracker's log level: Error, Warning, Info (default), Debug, Trace, Off.
	LogLevel string
	// LogPath is Firecracker's log file (default RunDir/firecracker.log).
	// Under the jailer, the log and metrics files are inside the chroot.
	LogPath string
	// MetricsPath, when set, is where Firecracker writes its metrics.
	MetricsPath string

	// ConsolePath, when set, receives the guest's serial console output.
	ConsolePath string
	// Console, when non-nil and ConsolePath is empty, receives the console output.
	Console io.Writer
	// WaitConsole, when set, makes Start return only once the console has
	// shown this text (bounded by Start's context).
	WaitConsole string

	// Env is added to the environment Firecracker runs with.
	Env []string

	// NetNS, when set, is the path of a network namespace (such as
	// /run/netns/NAME) that Firecracker runs in; its taps must be there.
	// Under the jailer use JailerConfig.NetNS instead.
	NetNS string
}

// Drive is a virtio-block device.
type Drive struct {
	// ID is the drive's name in Firecracker: 1–64 of [A-Za-z0-9_].
	ID string
	// Path is the backing file on the host. Required.
	Path string
	// ReadOnly attaches the drive read-only.
	ReadOnly bool
	// Root makes this the root device (root=/dev/vda or PARTUUID).
	Root bool
	// PartUUID selects a partition of a root device.
	PartUUID string
	// CacheType is Unsafe (default) or Writeback.
	CacheType CacheType
	// IOEngine is Sync (default) or Async.
	IOEngine IOEngine
	// RateLimiter limits the drive's I/O.
	RateLimiter *RateLimiter
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
	ID string
	// TapName is the host tap device (at most 15 bytes). Required.
	TapName string
	// MAC is the guest MAC address, unicast; empty lets Firecracker pick.
	MAC string
	// RxRateLimiter and TxRateLimiter limit the interface's traffic.
	RxRateLimiter *RateLimiter
	TxRateLimiter *RateLimiter
}

// Vsock is a virtio-vsock device, exposed on the host as a Unix socket.
type Vsock struct {
	// CID is the guest's context ID (≥ 3).
	CID uint32
	// Path is the host-side Unix socket (shorter than 108 bytes).
	Path string
}

// Entropy is a virtio-rng device.
type Entropy struct {
	RateLimiter *RateLimiter
}

// Balloon is a virtio-balloon device.
type Balloon struct {
	// AmountMiB is the initial balloon size.
	AmountMiB int
	// DeflateOnOOM lets the guest deflate the balloon under memory pressure.
	DeflateOnOOM bool
	// StatsInterval enables balloon statistics at this period (whole seconds).
	StatsInterval time.Duration
}

// MemoryHotplug is a virtio-mem device.
type MemoryHotplug struct {
	// TotalMiB is the most memory that can be plugged.
	TotalMiB int
	// SlotMiB and BlockMiB are the slot and block sizes (0 for Firecracker's defaults).
	SlotMiB  int
	BlockMiB int
}

// RateLimiter limits bandwidth and operations with token buckets.
type RateLimiter struct {
	Bandwidth *TokenBucket
	Ops       *TokenBucket
}

// TokenBucket is one token bucket of a RateLimiter.
type TokenBucket struct {
	// Size is the bucket's size in bytes or operations.
	Size int64
	// OneTimeBurst is an initial extra budget.
	OneTimeBurst int64
	// RefillTime is how long the bucket takes to refill completely.
	RefillTime time.Duration
}

// JailerConfig runs Firecracker through Firecracker's jailer.
type JailerConfig struct {
	// Path is the jailer executable. Required. The jailer runs only a
	// Firecracker whose file name contains "firecracker".
	Path string
	// UID and GID are the unprivileged user and group Firecracker runs as.
	UID, GID int
	// ChrootBase is the jailer's --chroot-base-dir (default /srv/jailer).
	ChrootBase string
	// NetNS is a network namespace path for Firecracker to join.
	NetNS string
	// CgroupVersion is 1 or 2 (default 2, always passed to the jailer,
	// whose own default is 1).
	CgroupVersion int
	// Cgroups are --cgroup key=value settings.
	Cgroups []string
	// NewPIDNS runs Firecracker in a new PID namespace.
	NewPIDNS bool
}
