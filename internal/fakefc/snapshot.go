package fakefc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// snapshotMagic marks a snapshot state file written by the fake.
const snapshotMagic = "kindling-fake-firecracker-snapshot/1"

// snapshotState is the whole emulated VM as the fake writes it to
// snapshot_path. Version is the emulated release that wrote it: another
// release refuses to load it.
type snapshotState struct {
	Magic      string   `json:"magic"`
	Version    string   `json:"version"`
	Type       string   `json:"snapshot_type"`
	CreatedAt  string   `json:"created_at"`
	ID         string   `json:"id"`
	MemSizeMiB int64    `json:"mem_size_mib"`
	Machine    object   `json:"machine_config"`
	Boot       object   `json:"boot_source,omitempty"`
	Drives     []object `json:"drives"`
	Nets       []object `json:"network_interfaces"`
	Vsock      object   `json:"vsock,omitempty"`
	Balloon    object   `json:"balloon,omitempty"`
	MMDSConfig object   `json:"mmds_config,omitempty"`
	Entropy    object   `json:"entropy,omitempty"`
	CPUConfig  object   `json:"cpu_config,omitempty"`
	Hotplug    object   `json:"memory_hotplug,omitempty"`
	HotplugReq int64    `json:"hotplug_requested_mib,omitempty"`
	Pmem       []object `json:"pmem,omitempty"`
	TestGuest  bool     `json:"test_guest,omitempty"`
	// Simulated marks the snapshot of a simulated guest: its processes
	// were not saved, and a load boots its init afresh from the root
	// drive's image.
	Simulated bool `json:"simulated,omitempty"`
}

func (fc *server) createSnapshot(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, snapshotCreateSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if s := str(o, "version"); s != "" {
		if _, err := ParseVersion(s); err != nil {
			return reply{}, badRequest("Create snapshot error: Invalid snapshot version %q.", s)
		}
	}
	typ := str(o, "snapshot_type")
	if typ == "" {
		typ = "Full"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != paused {
		return reply{}, badRequest("Create snapshot error: The microVM must be paused to create a snapshot.")
	}
	// From v1.13 a diff snapshot without dirty page tracking is allowed
	// (Firecracker then over-approximates the dirty pages).
	if typ == "Diff" && !flag(m.machine, "track_dirty_pages") && !m.version.AtLeast(v1_13) {
		return reply{}, badRequest("The requested operation is not supported: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.")
	}
	st := snapshotState{
		Magic: snapshotMagic, Version: m.version.String(), Type: typ,
		CreatedAt: time.Now().UTC().Format(time.RFC3339Nano), ID: m.id, MemSizeMiB: m.memMiB(),
		Machine: m.machine, Boot: m.boot, Drives: m.drives, Nets: m.nets, Vsock: m.vsock,
		Balloon: m.balloon, MMDSConfig: m.mmdsConfig, Entropy: m.entropy,
		CPUConfig: m.cpuConfig, Hotplug: m.hotplug, HotplugReq: m.hotplugReq, Pmem: m.pmem,
		TestGuest: m.testGuest, Simulated: m.sim != nil,
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return reply{}, badRequest("Create snapshot error: Cannot save the microVM state: %v", err)
	}
	if err := os.WriteFile(str(o, "snapshot_path"), b, 0o600); err != nil {
		return reply{}, badRequest("Create snapshot error: Cannot save the microVM state: %v", pathErr(err))
	}
	if err := writeSparse(str(o, "mem_file_path"), m.memMiB()<<20); err != nil {
		return reply{}, badRequest("Create snapshot error: Cannot save the memory snapshot: %v", pathErr(err))
	}
	m.log.info("fc_api", "Created a %s snapshot of the microVM.", typ)
	return reply{}, nil
}

// writeSparse creates (or truncates) path as a sparse file of size bytes.
func writeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// loadError is a snapshot load failure after the request was accepted:
// Firecracker answers 400 and then exits.
func (fc *server) loadError(format string, args ...any) (reply, error) {
	return reply{after: func() {
		time.Sleep(5 * time.Millisecond)
		fc.log.errorf("main", "RunWithApiError error: Failed to build MicroVM: Loading snapshot failed.")
		fc.exit(ExitError)
	}}, badRequest("Load snapshot error: Failed to restore from snapshot: "+format, args...)
}

func (fc *server) loadSnapshot(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, snapshotLoadSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	memPath := str(o, "mem_file_path")
	backend, _ := o["mem_backend"].(object)
	if m.version.AtLeast(v1_1) {
		switch {
		case memPath == "" && backend == nil:
			return reply{}, &decodeError{msg: "missing field: either `mem_backend` or `mem_file_path` is required"}
		case memPath != "" && backend != nil:
			return reply{}, &decodeError{msg: "too many fields: either `mem_backend` or `mem_file_path` exclusively is required"}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.configured {
		return reply{}, badRequest("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	b, err := os.ReadFile(str(o, "snapshot_path"))
	if err != nil {
		return fc.loadError("Failed to get snapshot state from file: Failed to open snapshot file: %v", pathErr(err))
	}
	var st snapshotState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&st); err != nil || st.Magic != snapshotMagic {
		return fc.loadError("Failed to get snapshot state from file: Failed to load snapshot state from file: not a snapshot state file")
	}
	if st.Version != m.version.String() {
		return fc.loadError("Failed to get snapshot state from file: snapshot was created by Firecracker v%s and cannot be loaded by v%s", st.Version, m.version)
	}
	if backend != nil {
		memPath = str(backend, "backend_path")
	}
	fi, err := os.Stat(memPath)
	switch {
	case err != nil:
		return fc.loadError("Failed to load guest memory: %v", pathErr(err))
	case backend != nil && str(backend, "backend_type") == "Uffd" && fi.Mode()&os.ModeSocket == 0:
		return fc.loadError("Failed to load guest memory: %s is not a Unix socket", memPath)
	case (backend == nil || str(backend, "backend_type") == "File") && fi.Size() < st.MemSizeMiB<<20:
		return fc.loadError("Failed to load guest memory: memory file %s is smaller than the guest memory", memPath)
	}
	if backend == nil || str(backend, "backend_type") == "File" {
		// Firecracker opens the file to map it, as the user it runs as
		// (a jail's): one it cannot read fails the load.
		f, err := os.Open(memPath)
		if err != nil {
			return fc.loadError("Failed to load guest memory: %v", pathErr(err))
		}
		f.Close()
	}
	if err := applyOverrides(&st, o); err != nil {
		return fc.loadError("%v", err)
	}
	if st.Vsock != nil {
		ln, err := listenVsock(str(st.Vsock, "uds_path"))
		if err != nil {
			return fc.loadError("Failed to restore the vsock device: %v", err)
		}
		m.vsockLn = ln
	}
	for _, d := range st.Drives {
		if p := str(d, "path_on_host"); p != "" && str(d, "socket") == "" {
			if _, err := os.Stat(p); err != nil {
				return fc.loadError("Failed to restore block device %q: %v %s", str(d, "drive_id"), pathErr(err), p)
			}
		}
	}
	m.machine, m.boot, m.drives, m.nets, m.vsock = st.Machine, st.Boot, st.Drives, st.Nets, st.Vsock
	// The MMDS data store is not part of a snapshot: it starts empty.
	m.balloon, m.mmdsConfig, m.entropy = st.Balloon, st.MMDSConfig, st.Entropy
	m.cpuConfig, m.hotplug, m.hotplugReq, m.pmem = st.CPUConfig, st.Hotplug, st.HotplugReq, st.Pmem
	m.testGuest = st.TestGuest
	if m.machine == nil {
		m.machine = object{}
	}
	if flag(o, "track_dirty_pages") || flag(o, "enable_diff_snapshots") {
		m.machine["track_dirty_pages"] = true
	}
	if st.Simulated && !flag(o, "resume_vm") {
		// Booted at the first resume, from the drives as they are then.
		m.simPending = true
	} else if st.Simulated {
		booted, err := fc.bootSimulated()
		if err == nil && !booted {
			err = errors.New("the root drive holds no bootable image")
		}
		if err != nil {
			if m.sim != nil {
				m.sim.stop()
			}
			return fc.loadError("Failed to boot the simulated guest afresh: %v", err)
		}
	}
	startVCPUs(m.vcpuCount())
	m.state = paused
	if flag(o, "resume_vm") {
		m.state = running
	}
	m.startedAt = time.Now()
	m.log.info("fc_api", "Loaded the microVM from snapshot %q (state %s).", str(o, "snapshot_path"), m.state)
	return reply{}, nil
}

// applyOverrides applies network_overrides and vsock_override of load
// parameters o to the loaded state.
func applyOverrides(st *snapshotState, o object) error {
	overrides, _ := o["network_overrides"].([]any)
	for _, x := range overrides {
		ov := asObject(x)
		i := indexOf(st.Nets, "iface_id", str(ov, "iface_id"))
		if i < 0 {
			return fmt.Errorf("invalid network override: no network interface %q in the snapshot", str(ov, "iface_id"))
		}
		st.Nets[i]["host_dev_name"] = str(ov, "host_dev_name")
	}
	if vo, ok := o["vsock_override"].(object); ok {
		if st.Vsock == nil {
			return errors.New("invalid vsock override: the snapshot has no vsock device")
		}
		st.Vsock["uds_path"] = str(vo, "uds_path")
	}
	return nil
}
