package fcapi

import "encoding/json"

// InstanceInfo is the answer of GET /.
type InstanceInfo struct {
	AppName    string        `json:"app_name"`
	ID         string        `json:"id"`
	State      InstanceState `json:"state"`
	VMMVersion string        `json:"vmm_version"`
}

// InstanceState is the microVM state reported in InstanceInfo.
type InstanceState string

// Instance states.
const (
	StateNotStarted InstanceState = "Not started"
	StateRunning    InstanceState = "Running"
	StatePaused     InstanceState = "Paused"
)

// FirecrackerVersion is the answer of GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// CPUTemplate is a static CPU template name.
type CPUTemplate string

// Static CPU templates (availability depends on the release and the host).
const (
	CPUTemplateC3   CPUTemplate = "C3"
	CPUTemplateT2   CPUTemplate = "T2"
	CPUTemplateT2S  CPUTemplate = "T2S"
	CPUTemplateT2CL CPUTemplate = "T2CL"
	CPUTemplateT2A  CPUTemplate = "T2A"
	CPUTemplateV1N1 CPUTemplate = "V1N1"
	CPUTemplateNone CPUTemplate = "None"
)

// HugePages selects the page size backing guest memory.
type HugePages string

// Huge page settings.
const (
	HugePagesNone HugePages = "None"
	HugePages2M   HugePages = "2M"
)

// MachineConfig is the body of PUT /machine-config and the answer of
// GET /machine-config.
type MachineConfig struct {
	VCPUCount       int         `json:"vcpu_count"`
	MemSizeMiB      int         `json:"mem_size_mib"`
	SMT             bool        `json:"smt,omitempty"`
	CPUTemplate     CPUTemplate `json:"cpu_template,omitempty"`
	TrackDirtyPages bool        `json:"track_dirty_pages,omitempty"`
	HugePages       HugePages   `json:"huge_pages,omitempty"`
}

// MachineConfigPatch is the body of PATCH /machine-config: nil fields are
// left unchanged.
type MachineConfigPatch struct {
	VCPUCount       *int        `json:"vcpu_count,omitempty"`
	MemSizeMiB      *int        `json:"mem_size_mib,omitempty"`
	SMT             *bool       `json:"smt,omitempty"`
	CPUTemplate     CPUTemplate `json:"cpu_template,omitempty"`
	TrackDirtyPages *bool       `json:"track_dirty_pages,omitempty"`
	HugePages       HugePages   `json:"huge_pages,omitempty"`
}

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// TokenBucket is one rate-limiter budget: Size tokens refilled every
// RefillTime milliseconds, plus an initial OneTimeBurst.
type TokenBucket struct {
	Size         int64  `json:"size"`
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
	RefillTime   int64  `json:"refill_time"`
}

// RateLimiter limits a device's bandwidth (bytes) and operations.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// CacheType is a block device's cache mode.
type CacheType string

// Cache modes.
const (
	CacheUnsafe    CacheType = "Unsafe"
	CacheWriteback CacheType = "Writeback"
)

// IOEngine is a block device's I/O engine.
type IOEngine string

// I/O engines.
const (
	IOEngineSync  IOEngine = "Sync"
	IOEngineAsync IOEngine = "Async"
)

// Drive is the body of PUT /drives/{id}; DriveID gives the id.
type Drive struct {
	DriveID      string       `json:"drive_id"`
	PathOnHost   string       `json:"path_on_host,omitempty"`
	IsRootDevice bool         `json:"is_root_device"`
	IsReadOnly   bool         `json:"is_read_only"`
	PartUUID     string       `json:"partuuid,omitempty"`
	CacheType    CacheType    `json:"cache_type,omitempty"`
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
	IOEngine     IOEngine     `json:"io_engine,omitempty"`
	// Socket is a vhost-user-block backend socket (1.6+); it replaces
	// PathOnHost.
	Socket string `json:"socket,omitempty"`
}

// PartialDrive is the body of PATCH /drives/{id}: a new backing file and/or
// rate limiter for a drive, allowed after boot.
type PartialDrive struct {
	DriveID     string       `json:"drive_id"`
	PathOnHost  string       `json:"path_on_host,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// NetworkInterface is the body of PUT /network-interfaces/{id}.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	MTU           int          `json:"mtu,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// PartialNetworkInterface is the body of PATCH /network-interfaces/{id}.
type PartialNetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is the body of PUT /vsock.
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
	// VsockID is deprecated and ignored by Firecracker 1.x.
	VsockID string `json:"vsock_id,omitempty"`
}

// LogLevel is Firecracker's log level.
type LogLevel string

// Log levels (Trace and Off from 1.5).
const (
	LogError   LogLevel = "Error"
	LogWarning LogLevel = "Warning"
	LogInfo    LogLevel = "Info"
	LogDebug   LogLevel = "Debug"
	LogTrace   LogLevel = "Trace"
	LogOff     LogLevel = "Off"
)

// Logger is the body of PUT /logger.
type Logger struct {
	LogPath       string   `json:"log_path,omitempty"`
	Level         LogLevel `json:"level,omitempty"`
	ShowLevel     bool     `json:"show_level,omitempty"`
	ShowLogOrigin bool     `json:"show_log_origin,omitempty"`
	Module        string   `json:"module,omitempty"`
}

// Metrics is the body of PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// MMDSVersion is the MMDS protocol version.
type MMDSVersion string

// MMDS versions.
const (
	MMDSv1 MMDSVersion = "V1"
	MMDSv2 MMDSVersion = "V2"
)

// MMDSConfig is the body of PUT /mmds/config.
type MMDSConfig struct {
	Version           MMDSVersion `json:"version,omitempty"`
	NetworkInterfaces []string    `json:"network_interfaces"`
	IPv4Address       string      `json:"ipv4_address,omitempty"`
	IMDSCompat        bool        `json:"imds_compat,omitempty"`
}

// Balloon is the body of PUT /balloon and the answer of GET /balloon.
type Balloon struct {
	AmountMiB             int  `json:"amount_mib"`
	DeflateOnOOM          bool `json:"deflate_on_oom"`
	StatsPollingIntervalS int  `json:"stats_polling_interval_s,omitempty"`
	FreePageHinting       bool `json:"free_page_hinting,omitempty"`
	FreePageReporting     bool `json:"free_page_reporting,omitempty"`
}

// BalloonUpdate is the body of PATCH /balloon.
type BalloonUpdate struct {
	AmountMiB int `json:"amount_mib"`
}

// BalloonStatsUpdate is the body of PATCH /balloon/statistics.
type BalloonStatsUpdate struct {
	StatsPollingIntervalS int `json:"stats_polling_interval_s"`
}

// BalloonStats is the answer of GET /balloon/statistics. Optional counters
// the guest did not report are zero.
type BalloonStats struct {
	TargetPages        int   `json:"target_pages"`
	ActualPages        int   `json:"actual_pages"`
	TargetMiB          int   `json:"target_mib"`
	ActualMiB          int   `json:"actual_mib"`
	SwapIn             int64 `json:"swap_in,omitempty"`
	SwapOut            int64 `json:"swap_out,omitempty"`
	MajorFaults        int64 `json:"major_faults,omitempty"`
	MinorFaults        int64 `json:"minor_faults,omitempty"`
	FreeMemory         int64 `json:"free_memory,omitempty"`
	TotalMemory        int64 `json:"total_memory,omitempty"`
	AvailableMemory    int64 `json:"available_memory,omitempty"`
	DiskCaches         int64 `json:"disk_caches,omitempty"`
	HugetlbAllocations int64 `json:"hugetlb_allocations,omitempty"`
	HugetlbFailures    int64 `json:"hugetlb_failures,omitempty"`
	OOMKill            int64 `json:"oom_kill,omitempty"`
	AllocStall         int64 `json:"alloc_stall,omitempty"`
	AsyncScan          int64 `json:"async_scan,omitempty"`
	DirectScan         int64 `json:"direct_scan,omitempty"`
	AsyncReclaim       int64 `json:"async_reclaim,omitempty"`
	DirectReclaim      int64 `json:"direct_reclaim,omitempty"`
}

// BalloonStartCmd is the body of PATCH /balloon/hinting/start.
type BalloonStartCmd struct {
	AcknowledgeOnStop bool `json:"acknowledge_on_stop,omitempty"`
}

// BalloonHintingStatus is the answer of GET /balloon/hinting/status.
type BalloonHintingStatus struct {
	HostCmd  int  `json:"host_cmd"`
	GuestCmd *int `json:"guest_cmd,omitempty"`
}

// EntropyDevice is the body of PUT /entropy.
type EntropyDevice struct {
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// CPUConfig is the body of PUT /cpu-config (a custom CPU template).
type CPUConfig struct {
	KVMCapabilities []string              `json:"kvm_capabilities,omitempty"`
	CPUIDModifiers  []CPUIDLeafModifier   `json:"cpuid_modifiers,omitempty"`
	MSRModifiers    []MSRModifier         `json:"msr_modifiers,omitempty"`
	RegModifiers    []ARMRegisterModifier `json:"reg_modifiers,omitempty"`
	VCPUFeatures    []VCPUFeatures        `json:"vcpu_features,omitempty"`
}

// CPUIDLeafModifier modifies one CPUID leaf.
type CPUIDLeafModifier struct {
	Leaf      string                  `json:"leaf"`
	Subleaf   string                  `json:"subleaf"`
	Flags     int32                   `json:"flags"`
	Modifiers []CPUIDRegisterModifier `json:"modifiers"`
}

// CPUIDRegisterModifier modifies one register of a CPUID leaf.
type CPUIDRegisterModifier struct {
	Register string `json:"register"`
	Bitmap   string `json:"bitmap"`
}

// MSRModifier modifies one model-specific register.
type MSRModifier struct {
	Addr   string `json:"addr"`
	Bitmap string `json:"bitmap"`
}

// ARMRegisterModifier modifies one aarch64 register.
type ARMRegisterModifier struct {
	Addr   string `json:"addr"`
	Bitmap string `json:"bitmap"`
}

// VCPUFeatures modifies one aarch64 vCPU feature word.
type VCPUFeatures struct {
	Index  int32  `json:"index"`
	Bitmap string `json:"bitmap"`
}

// SerialDevice is the body of PUT /serial.
type SerialDevice struct {
	SerialOutPath string       `json:"serial_out_path,omitempty"`
	RateLimiter   *TokenBucket `json:"rate_limiter,omitempty"`
}

// MemoryHotplugConfig is the body of PUT /hotplug/memory.
type MemoryHotplugConfig struct {
	TotalSizeMiB int `json:"total_size_mib,omitempty"`
	SlotSizeMiB  int `json:"slot_size_mib,omitempty"`
	BlockSizeMiB int `json:"block_size_mib,omitempty"`
}

// MemoryHotplugSizeUpdate is the body of PATCH /hotplug/memory.
type MemoryHotplugSizeUpdate struct {
	RequestedSizeMiB int `json:"requested_size_mib"`
}

// MemoryHotplugStatus is the answer of GET /hotplug/memory.
type MemoryHotplugStatus struct {
	TotalSizeMiB     int `json:"total_size_mib"`
	SlotSizeMiB      int `json:"slot_size_mib"`
	BlockSizeMiB     int `json:"block_size_mib"`
	PluggedSizeMiB   int `json:"plugged_size_mib"`
	RequestedSizeMiB int `json:"requested_size_mib"`
}

// Pmem is the body of PUT /pmem/{id}; ID gives the id.
type Pmem struct {
	ID          string       `json:"id"`
	PathOnHost  string       `json:"path_on_host"`
	RootDevice  bool         `json:"root_device,omitempty"`
	ReadOnly    bool         `json:"read_only,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// PartialPmem is the body of PATCH /pmem/{id}.
type PartialPmem struct {
	ID          string       `json:"id"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// ActionType is an action for PUT /actions.
type ActionType string

// Actions.
const (
	ActionInstanceStart  ActionType = "InstanceStart"
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
	ActionFlushMetrics   ActionType = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions.
type InstanceActionInfo struct {
	ActionType ActionType `json:"action_type"`
}

// VMState is a state for PATCH /vm.
type VMState string

// VM states.
const (
	VMPaused  VMState = "Paused"
	VMResumed VMState = "Resumed"
)

// VM is the body of PATCH /vm.
type VM struct {
	State VMState `json:"state"`
}

// SnapshotType is a snapshot kind.
type SnapshotType string

// Snapshot kinds.
const (
	SnapshotFull SnapshotType = "Full"
	SnapshotDiff SnapshotType = "Diff"
)

// SnapshotCreate is the body of PUT /snapshot/create.
type SnapshotCreate struct {
	SnapshotType SnapshotType `json:"snapshot_type,omitempty"`
	SnapshotPath string       `json:"snapshot_path"`
	MemFilePath  string       `json:"mem_file_path"`
	// Version is the snapshot format version to write; only releases up to
	// 1.5.x accept it.
	Version string `json:"version,omitempty"`
}

// MemoryBackendType says how a restored VM's memory is served.
type MemoryBackendType string

// Memory backends (Uffd from 1.1).
const (
	MemoryBackendFile MemoryBackendType = "File"
	MemoryBackendUffd MemoryBackendType = "Uffd"
)

// MemoryBackend names the guest memory to restore.
type MemoryBackend struct {
	BackendType MemoryBackendType `json:"backend_type"`
	BackendPath string            `json:"backend_path"`
}

// NetworkOverride swaps a network interface's tap on restore (1.12+).
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride swaps the vsock socket path on restore (1.16+).
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoad is the body of PUT /snapshot/load, in the newest release's
// shape. The client translates it for older releases: MemBackend is sent as
// mem_file_path to 1.0.x, and TrackDirtyPages as enable_diff_snapshots
// before 1.13.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       MemoryBackend     `json:"mem_backend"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
	ClockRealtime    bool              `json:"clock_realtime,omitempty"`
}

// FullVMConfig is the answer of GET /vm/config.
type FullVMConfig struct {
	Balloon           *Balloon             `json:"balloon,omitempty"`
	Drives            []Drive              `json:"drives,omitempty"`
	BootSource        *BootSource          `json:"boot-source,omitempty"`
	CPUConfig         *CPUConfig           `json:"cpu-config,omitempty"`
	Logger            *Logger              `json:"logger,omitempty"`
	MachineConfig     *MachineConfig       `json:"machine-config,omitempty"`
	Metrics           *Metrics             `json:"metrics,omitempty"`
	MemoryHotplug     *MemoryHotplugConfig `json:"memory-hotplug,omitempty"`
	MMDSConfig        *MMDSConfig          `json:"mmds-config,omitempty"`
	NetworkInterfaces []NetworkInterface   `json:"network-interfaces,omitempty"`
	Pmem              []Pmem               `json:"pmem,omitempty"`
	Vsock             *Vsock               `json:"vsock,omitempty"`
	Entropy           *EntropyDevice       `json:"entropy,omitempty"`
}

// UnmarshalJSON also accepts the key names of 1.0.x (block_devices,
// boot_source, machine_config, …).
func (f *FullVMConfig) UnmarshalJSON(data []byte) error {
	type plain FullVMConfig
	var legacy struct {
		plain
		BalloonDevice *Balloon           `json:"balloon_device"`
		BlockDevices  []Drive            `json:"block_devices"`
		BootSource    *BootSource        `json:"boot_source"`
		MachineConfig *MachineConfig     `json:"machine_config"`
		MMDSConfig    *MMDSConfig        `json:"mmds_config"`
		NetDevices    []NetworkInterface `json:"net_devices"`
		VsockDevice   *Vsock             `json:"vsock_device"`
	}
	if err := json.Unmarshal(data, &legacy); err != nil {
		return err
	}
	*f = FullVMConfig(legacy.plain)
	if f.Balloon == nil {
		f.Balloon = legacy.BalloonDevice
	}
	if f.Drives == nil {
		f.Drives = legacy.BlockDevices
	}
	if f.BootSource == nil {
		f.BootSource = legacy.BootSource
	}
	if f.MachineConfig == nil {
		f.MachineConfig = legacy.MachineConfig
	}
	if f.MMDSConfig == nil {
		f.MMDSConfig = legacy.MMDSConfig
	}
	if f.NetworkInterfaces == nil {
		f.NetworkInterfaces = legacy.NetDevices
	}
	if f.Vsock == nil {
		f.Vsock = legacy.VsockDevice
	}
	return nil
}
