package fcapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// shape encodes body as a JSON object shaped for the running release (see
// shapeFields); def is body's definition name in the swagger spec.
func (c *Client) shape(ctx context.Context, def string, body any) (map[string]json.RawMessage, Version, error) {
	ver, err := c.Version(ctx)
	if err != nil {
		return nil, ver, err
	}
	fields, err := toFields(body)
	if err != nil {
		return nil, ver, err
	}
	if err := shapeFields(ver, def, fields); err != nil {
		return nil, ver, err
	}
	return fields, ver, nil
}

func toFields(body any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return fields, nil
}

// put sends a shaped body to an endpoint.
func (c *Client) put(ctx context.Context, method, route, id, def string, body any) error {
	fields, _, err := c.shape(ctx, def, body)
	if err != nil {
		return err
	}
	return c.do(ctx, call{method: method, route: route, id: id, body: fields})
}

// GetInstanceInfo returns the answer of GET /.
func (c *Client) GetInstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	if err := c.do(ctx, call{method: http.MethodGet, route: "/", out: &info}); err != nil {
		return InstanceInfo{}, fmt.Errorf("get instance info: %w", err)
	}
	return info, nil
}

// GetFirecrackerVersion returns the answer of GET /version (1.0+). Version
// is usually what a caller wants.
func (c *Client) GetFirecrackerVersion(ctx context.Context) (FirecrackerVersion, error) {
	var fv FirecrackerVersion
	if err := c.send(ctx, http.MethodGet, "/version", nil, &fv); err != nil {
		return FirecrackerVersion{}, fmt.Errorf("get firecracker version: %w", err)
	}
	return fv, nil
}

// GetMachineConfig returns the machine configuration.
func (c *Client) GetMachineConfig(ctx context.Context) (MachineConfig, error) {
	var mc MachineConfig
	if err := c.do(ctx, call{method: http.MethodGet, route: "/machine-config", out: &mc}); err != nil {
		return MachineConfig{}, fmt.Errorf("get machine config: %w", err)
	}
	return mc, nil
}

// PutMachineConfig sets the machine configuration (before boot).
func (c *Client) PutMachineConfig(ctx context.Context, mc MachineConfig) error {
	if err := c.put(ctx, http.MethodPut, "/machine-config", "", "MachineConfiguration", mc); err != nil {
		return fmt.Errorf("put machine config: %w", err)
	}
	return nil
}

// PatchMachineConfig changes some machine configuration fields (before boot).
func (c *Client) PatchMachineConfig(ctx context.Context, mc MachineConfigPatch) error {
	if err := c.put(ctx, http.MethodPatch, "/machine-config", "", "MachineConfiguration", mc); err != nil {
		return fmt.Errorf("patch machine config: %w", err)
	}
	return nil
}

// GetVMConfig returns the whole VM configuration (GET /vm/config).
func (c *Client) GetVMConfig(ctx context.Context) (FullVMConfig, error) {
	var cfg FullVMConfig
	if err := c.do(ctx, call{method: http.MethodGet, route: "/vm/config", out: &cfg}); err != nil {
		return FullVMConfig{}, fmt.Errorf("get vm config: %w", err)
	}
	return cfg, nil
}

// PutBootSource sets the kernel, command line and initrd.
func (c *Client) PutBootSource(ctx context.Context, bs BootSource) error {
	if err := c.put(ctx, http.MethodPut, "/boot-source", "", "BootSource", bs); err != nil {
		return fmt.Errorf("put boot source: %w", err)
	}
	return nil
}

// PutDrive adds or replaces the drive d.DriveID (before boot).
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	fields, _, err := c.shape(ctx, "Drive", d)
	if err == nil {
		if d.Socket != "" && !d.IsReadOnly {
			// A vhost-user drive takes no is_read_only.
			delete(fields, "is_read_only")
		}
		err = c.do(ctx, call{method: http.MethodPut, route: "/drives/{id}", id: d.DriveID, body: fields})
	}
	if err != nil {
		return fmt.Errorf("put drive %q: %w", d.DriveID, err)
	}
	return nil
}

// PatchDrive changes the backing file or rate limiter of drive d.DriveID;
// after boot this also makes the guest see the new size.
func (c *Client) PatchDrive(ctx context.Context, d PartialDrive) error {
	if err := c.put(ctx, http.MethodPatch, "/drives/{id}", d.DriveID, "PartialDrive", d); err != nil {
		return fmt.Errorf("patch drive %q: %w", d.DriveID, err)
	}
	return nil
}

// PutNetworkInterface adds the network interface n.IfaceID (before boot).
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	if err := c.put(ctx, http.MethodPut, "/network-interfaces/{id}", n.IfaceID, "NetworkInterface", n); err != nil {
		return fmt.Errorf("put network interface %q: %w", n.IfaceID, err)
	}
	return nil
}

// PatchNetworkInterface changes the rate limiters of n.IfaceID.
func (c *Client) PatchNetworkInterface(ctx context.Context, n PartialNetworkInterface) error {
	if err := c.put(ctx, http.MethodPatch, "/network-interfaces/{id}", n.IfaceID, "PartialNetworkInterface", n); err != nil {
		return fmt.Errorf("patch network interface %q: %w", n.IfaceID, err)
	}
	return nil
}

// PutVsock sets the vsock device (before boot).
func (c *Client) PutVsock(ctx context.Context, vs Vsock) error {
	if err := c.put(ctx, http.MethodPut, "/vsock", "", "Vsock", vs); err != nil {
		return fmt.Errorf("put vsock: %w", err)
	}
	return nil
}

// PutLogger configures Firecracker's own log.
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	if err := c.put(ctx, http.MethodPut, "/logger", "", "Logger", l); err != nil {
		return fmt.Errorf("put logger: %w", err)
	}
	return nil
}

// PutMetrics configures the metrics file.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	if err := c.put(ctx, http.MethodPut, "/metrics", "", "Metrics", m); err != nil {
		return fmt.Errorf("put metrics: %w", err)
	}
	return nil
}

// PutMMDS replaces the MMDS data store with data (any JSON-encodable value).
func (c *Client) PutMMDS(ctx context.Context, data any) error {
	if err := c.do(ctx, call{method: http.MethodPut, route: "/mmds", body: data}); err != nil {
		return fmt.Errorf("put mmds: %w", err)
	}
	return nil
}

// PatchMMDS merges data into the MMDS data store (JSON merge patch).
func (c *Client) PatchMMDS(ctx context.Context, data any) error {
	if err := c.do(ctx, call{method: http.MethodPatch, route: "/mmds", body: data}); err != nil {
		return fmt.Errorf("patch mmds: %w", err)
	}
	return nil
}

// GetMMDS returns the MMDS data store as raw JSON.
func (c *Client) GetMMDS(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := c.do(ctx, call{method: http.MethodGet, route: "/mmds", out: &raw}); err != nil {
		return nil, fmt.Errorf("get mmds: %w", err)
	}
	return raw, nil
}

// PutMMDSConfig configures MMDS (version, interfaces, address).
func (c *Client) PutMMDSConfig(ctx context.Context, mc MMDSConfig) error {
	fields, ver, err := c.shape(ctx, "MmdsConfig", mc)
	if err == nil {
		if val, ok := fields["imds_compat"]; ok && ver.Compare(v(1, 13, 0)) == 0 {
			// 1.13.0 spelled the field "imds_comat".
			delete(fields, "imds_compat")
			fields["imds_comat"] = val
		}
		err = c.do(ctx, call{method: http.MethodPut, route: "/mmds/config", body: fields})
	}
	if err != nil {
		return fmt.Errorf("put mmds config: %w", err)
	}
	return nil
}

// PutBalloon adds the balloon device (before boot).
func (c *Client) PutBalloon(ctx context.Context, b Balloon) error {
	if err := c.put(ctx, http.MethodPut, "/balloon", "", "Balloon", b); err != nil {
		return fmt.Errorf("put balloon: %w", err)
	}
	return nil
}

// PatchBalloon changes the balloon's target size.
func (c *Client) PatchBalloon(ctx context.Context, b BalloonUpdate) error {
	if err := c.put(ctx, http.MethodPatch, "/balloon", "", "BalloonUpdate", b); err != nil {
		return fmt.Errorf("patch balloon: %w", err)
	}
	return nil
}

// GetBalloon returns the balloon configuration.
func (c *Client) GetBalloon(ctx context.Context) (Balloon, error) {
	var b Balloon
	if err := c.do(ctx, call{method: http.MethodGet, route: "/balloon", out: &b}); err != nil {
		return Balloon{}, fmt.Errorf("get balloon: %w", err)
	}
	return b, nil
}

// GetBalloonStats returns the balloon statistics.
func (c *Client) GetBalloonStats(ctx context.Context) (BalloonStats, error) {
	var s BalloonStats
	if err := c.do(ctx, call{method: http.MethodGet, route: "/balloon/statistics", out: &s}); err != nil {
		return BalloonStats{}, fmt.Errorf("get balloon statistics: %w", err)
	}
	return s, nil
}

// PatchBalloonStats changes the statistics polling interval.
func (c *Client) PatchBalloonStats(ctx context.Context, u BalloonStatsUpdate) error {
	if err := c.put(ctx, http.MethodPatch, "/balloon/statistics", "", "BalloonStatsUpdate", u); err != nil {
		return fmt.Errorf("patch balloon statistics: %w", err)
	}
	return nil
}

// StartBalloonHinting starts a free page hinting run (1.14+).
func (c *Client) StartBalloonHinting(ctx context.Context, cmd BalloonStartCmd) error {
	if err := c.put(ctx, http.MethodPatch, "/balloon/hinting/start", "", "BalloonStartCmd", cmd); err != nil {
		return fmt.Errorf("start balloon hinting: %w", err)
	}
	return nil
}

// StopBalloonHinting stops a free page hinting run (1.14+).
func (c *Client) StopBalloonHinting(ctx context.Context) error {
	if err := c.do(ctx, call{method: http.MethodPatch, route: "/balloon/hinting/stop"}); err != nil {
		return fmt.Errorf("stop balloon hinting: %w", err)
	}
	return nil
}

// GetBalloonHintingStatus returns the state of free page hinting (1.14+).
func (c *Client) GetBalloonHintingStatus(ctx context.Context) (BalloonHintingStatus, error) {
	var s BalloonHintingStatus
	if err := c.do(ctx, call{method: http.MethodGet, route: "/balloon/hinting/status", out: &s}); err != nil {
		return BalloonHintingStatus{}, fmt.Errorf("get balloon hinting status: %w", err)
	}
	return s, nil
}

// PutEntropy adds the virtio-rng device (1.4+, before boot).
func (c *Client) PutEntropy(ctx context.Context, e EntropyDevice) error {
	if err := c.put(ctx, http.MethodPut, "/entropy", "", "EntropyDevice", e); err != nil {
		return fmt.Errorf("put entropy device: %w", err)
	}
	return nil
}

// PutCPUConfig sets a custom CPU template (1.4+, before boot).
func (c *Client) PutCPUConfig(ctx context.Context, cc CPUConfig) error {
	if err := c.put(ctx, http.MethodPut, "/cpu-config", "", "CpuConfig", cc); err != nil {
		return fmt.Errorf("put cpu config: %w", err)
	}
	return nil
}

// PutSerial configures the serial console output (1.14+, before boot).
func (c *Client) PutSerial(ctx context.Context, s SerialDevice) error {
	if err := c.put(ctx, http.MethodPut, "/serial", "", "SerialDevice", s); err != nil {
		return fmt.Errorf("put serial: %w", err)
	}
	return nil
}

// PutMemoryHotplug adds the virtio-mem device (1.14+, before boot).
func (c *Client) PutMemoryHotplug(ctx context.Context, m MemoryHotplugConfig) error {
	if err := c.put(ctx, http.MethodPut, "/hotplug/memory", "", "MemoryHotplugConfig", m); err != nil {
		return fmt.Errorf("put memory hotplug: %w", err)
	}
	return nil
}

// PatchMemoryHotplug requests a new hot-plugged memory size (1.14+).
func (c *Client) PatchMemoryHotplug(ctx context.Context, u MemoryHotplugSizeUpdate) error {
	if err := c.put(ctx, http.MethodPatch, "/hotplug/memory", "", "MemoryHotplugSizeUpdate", u); err != nil {
		return fmt.Errorf("patch memory hotplug: %w", err)
	}
	return nil
}

// GetMemoryHotplug returns the virtio-mem device status (1.14+).
func (c *Client) GetMemoryHotplug(ctx context.Context) (MemoryHotplugStatus, error) {
	var s MemoryHotplugStatus
	if err := c.do(ctx, call{method: http.MethodGet, route: "/hotplug/memory", out: &s}); err != nil {
		return MemoryHotplugStatus{}, fmt.Errorf("get memory hotplug: %w", err)
	}
	return s, nil
}

// PutPmem adds the pmem device p.ID (1.14+, before boot).
func (c *Client) PutPmem(ctx context.Context, p Pmem) error {
	if err := c.put(ctx, http.MethodPut, "/pmem/{id}", p.ID, "Pmem", p); err != nil {
		return fmt.Errorf("put pmem %q: %w", p.ID, err)
	}
	return nil
}

// PatchPmem changes the rate limiter of pmem device p.ID (1.16+).
func (c *Client) PatchPmem(ctx context.Context, p PartialPmem) error {
	if err := c.put(ctx, http.MethodPatch, "/pmem/{id}", p.ID, "PartialPmem", p); err != nil {
		return fmt.Errorf("patch pmem %q: %w", p.ID, err)
	}
	return nil
}

// PutAction performs an action (PUT /actions).
func (c *Client) PutAction(ctx context.Context, a ActionType) error {
	if err := c.do(ctx, call{method: http.MethodPut, route: "/actions", body: InstanceActionInfo{ActionType: a}}); err != nil {
		return fmt.Errorf("action %s: %w", a, err)
	}
	return nil
}

// InstanceStart boots the configured microVM.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.PutAction(ctx, ActionInstanceStart)
}

// SendCtrlAltDel asks the guest to reboot (x86_64), which a Firecracker
// guest turns into a shutdown.
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.PutAction(ctx, ActionSendCtrlAltDel)
}

// FlushMetrics writes the metrics now.
func (c *Client) FlushMetrics(ctx context.Context) error {
	return c.PutAction(ctx, ActionFlushMetrics)
}

// PatchVM pauses or resumes the microVM.
func (c *Client) PatchVM(ctx context.Context, state VMState) error {
	if err := c.do(ctx, call{method: http.MethodPatch, route: "/vm", body: VM{State: state}}); err != nil {
		return fmt.Errorf("set vm state %s: %w", state, err)
	}
	return nil
}

// Pause pauses the microVM's vCPUs.
func (c *Client) Pause(ctx context.Context) error { return c.PatchVM(ctx, VMPaused) }

// Resume resumes a paused microVM.
func (c *Client) Resume(ctx context.Context) error { return c.PatchVM(ctx, VMResumed) }

// CreateSnapshot writes a snapshot of the paused microVM.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	if err := c.put(ctx, http.MethodPut, "/snapshot/create", "", "SnapshotCreateParams", s); err != nil {
		return fmt.Errorf("create snapshot %q: %w", s.SnapshotPath, err)
	}
	return nil
}

// LoadSnapshot restores a snapshot into a fresh Firecracker process,
// translating the request for the running release.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	if err := c.loadSnapshot(ctx, s); err != nil {
		return fmt.Errorf("load snapshot %q: %w", s.SnapshotPath, err)
	}
	return nil
}

func (c *Client) loadSnapshot(ctx context.Context, s SnapshotLoad) error {
	ver, err := c.Version(ctx)
	if err != nil {
		return err
	}
	body, err := shapeSnapshotLoad(ver, s)
	if err != nil {
		return err
	}
	return c.do(ctx, call{method: http.MethodPut, route: "/snapshot/load", body: body})
}

// shapeSnapshotLoad renders s for release ver: mem_backend became the way
// to name guest memory in 1.1 (mem_file_path before), and
// enable_diff_snapshots was renamed track_dirty_pages in 1.13.
func shapeSnapshotLoad(ver Version, s SnapshotLoad) (map[string]json.RawMessage, error) {
	fields, err := toFields(s)
	if err != nil {
		return nil, err
	}
	if !CapabilitiesOf(ver).Supports(FeatureMemBackend) {
		if s.MemBackend.BackendType != MemoryBackendFile && s.MemBackend.BackendType != "" {
			return nil, byFeature[FeatureUffd].refuse("SnapshotLoadParams.mem_backend", ver)
		}
		delete(fields, "mem_backend")
		path, _ := json.Marshal(s.MemBackend.BackendPath)
		fields["mem_file_path"] = path
	}
	if val, ok := fields["track_dirty_pages"]; ok && !CapabilitiesOf(ver).Supports(FeatureTrackDirtyOnLoad) {
		delete(fields, "track_dirty_pages")
		fields["enable_diff_snapshots"] = val
	}
	if err := shapeFields(ver, "SnapshotLoadParams", fields); err != nil {
		return nil, err
	}
	return fields, nil
}
