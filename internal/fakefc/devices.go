package fakefc

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
)

// indexOf returns the position of the object whose key field is id, or -1.
func indexOf(list []object, key, id string) int {
	for i, o := range list {
		if str(o, key) == id {
			return i
		}
	}
	return -1
}

func (fc *server) putDrive(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, driveSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if str(o, "drive_id") != r.id {
		return reply{}, badRequest("The id from the path does not match the id from the body!")
	}
	if str(o, "socket") == "" {
		p, set := o["path_on_host"].(string)
		if !set {
			return reply{}, badRequest("Drive config error: Unable to create the virtio block device: Invalid block config.")
		}
		if _, err := os.Stat(p); err != nil {
			return reply{}, badRequest("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: %v %s", pathErr(err), p)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if flag(o, "is_root_device") {
		for _, d := range m.drives {
			if flag(d, "is_root_device") && str(d, "drive_id") != r.id {
				return reply{}, badRequest("Drive config error: A root block device already exists!")
			}
		}
	}
	if i := indexOf(m.drives, "drive_id", r.id); i >= 0 {
		m.drives[i] = o
	} else if flag(o, "is_root_device") {
		// The root device is listed first, as Firecracker orders it.
		m.drives = append([]object{o}, m.drives...)
	} else {
		m.drives = append(m.drives, o)
	}
	m.configured = true
	return reply{}, nil
}

func (fc *server) patchDrive(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, partialDriveSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if str(o, "drive_id") != r.id {
		return reply{}, badRequest("The id from the path does not match the id from the body!")
	}
	if p, set := o["path_on_host"].(string); set {
		if _, err := os.Stat(p); err != nil {
			return reply{}, badRequest("Drive update error: Unable to patch the block device: Virtio backend error: Error manipulating the backing file: %v %s", pathErr(err), p)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i := indexOf(m.drives, "drive_id", r.id)
	if i < 0 {
		return reply{}, badRequest("Drive update error: Unable to patch the block device: Invalid block device ID %q.", r.id)
	}
	for k, x := range o {
		if x != nil {
			m.drives[i][k] = x
		}
	}
	m.log.info("fc_api", "Updated block device %q.", r.id)
	return reply{}, nil
}

func (fc *server) putNet(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, netSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if str(o, "iface_id") != r.id {
		return reply{}, badRequest("The id from the path does not match the id from the body!")
	}
	if mac := str(o, "guest_mac"); mac != "" {
		if hw, err := net.ParseMAC(mac); err != nil || len(hw) != 6 {
			line, col := position(r.body, int64(len(r.body)))
			return reply{}, &decodeError{msg: "The provided MAC address is invalid.", line: line, column: col}
		}
	}
	tap := str(o, "host_dev_name")
	if len(tap) == 0 || len(tap) > 15 {
		return reply{}, badRequest("Network interface error: Could not create the network device: Open tap device failed: invalid interface name %q", tap)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.nets {
		if str(n, "iface_id") != r.id && str(n, "host_dev_name") == tap {
			return reply{}, badRequest("Network interface error: The host device name %s is already in use.", tap)
		}
		if str(n, "iface_id") != r.id && o["guest_mac"] != nil && str(n, "guest_mac") == str(o, "guest_mac") {
			return reply{}, badRequest("Network interface error: The MAC address is already in use: %s", str(o, "guest_mac"))
		}
	}
	if i := indexOf(m.nets, "iface_id", r.id); i >= 0 {
		m.nets[i] = o
	} else {
		m.nets = append(m.nets, o)
	}
	m.configured = true
	return reply{}, nil
}

func (fc *server) patchNet(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, partialNetSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if str(o, "iface_id") != r.id {
		return reply{}, badRequest("The id from the path does not match the id from the body!")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i := indexOf(m.nets, "iface_id", r.id)
	if i < 0 {
		return reply{}, badRequest("Network interface update error: Device not found: %s", r.id)
	}
	for k, x := range o {
		if x != nil {
			m.nets[i][k] = x
		}
	}
	return reply{}, nil
}

func (fc *server) putVsock(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, vsockSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vsockLn != nil {
		m.vsockLn.close()
		m.vsockLn = nil
	}
	ln, err := listenVsock(str(o, "uds_path"))
	if err != nil {
		return reply{}, badRequest("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: %v", err)
	}
	m.vsockLn = ln
	m.vsock = o
	m.configured = true
	return reply{}, nil
}

// decodeAny decodes a JSON value of any shape, keeping numbers exact.
func decodeAny(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, syntaxError(body, dec, err)
	}
	if dec.More() {
		line, col := position(body, dec.InputOffset())
		return nil, &decodeError{msg: "trailing characters", line: line, column: col}
	}
	return x, nil
}

func (fc *server) getMMDS(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mmds == nil {
		return reply{body: map[string]any{}}, nil
	}
	return reply{body: m.mmds}, nil
}

func (fc *server) putMMDS(r *request) (reply, error) {
	m := fc.vm
	if len(r.body) > m.mmdsLimit {
		return reply{}, &apiError{status: http.StatusRequestEntityTooLarge, msg: "MMDS limit exceeded error: The MMDS patch request doesn't fit."}
	}
	x, err := decodeAny(r.body)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mmds = x
	return reply{}, nil
}

func (fc *server) patchMMDS(r *request) (reply, error) {
	m := fc.vm
	x, err := decodeAny(r.body)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mmds == nil {
		return reply{}, badRequest("MMDS error: The MMDS data store is not initialized.")
	}
	merged := mergePatch(m.mmds, x)
	if b, err := json.Marshal(merged); err == nil && len(b) > m.mmdsLimit {
		return reply{}, &apiError{status: http.StatusRequestEntityTooLarge, msg: "MMDS limit exceeded error: The MMDS patch request doesn't fit."}
	}
	m.mmds = merged
	return reply{}, nil
}

// mergePatch applies a JSON merge patch (RFC 7396) to target.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	out := make(map[string]any, len(t))
	for k, x := range t {
		out[k] = x
	}
	for k, x := range p {
		if x == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], x)
	}
	return out
}

func (fc *server) putMMDSConfig(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, mmdsConfigSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if ip := str(o, "ipv4_address"); ip != "" {
		a := net.ParseIP(ip)
		if a == nil || a.To4() == nil || !a.IsLinkLocalUnicast() {
			return reply{}, badRequest("The MMDS could not be configured to listen on the IPv4 address %s: it must be link-local.", ip)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ifaces, _ := o["network_interfaces"].([]any)
	if m.version.AtLeast(v1_0) && len(ifaces) == 0 {
		return reply{}, badRequest("The list of network interface IDs that allow forwarding MMDS requests is empty.")
	}
	for _, x := range ifaces {
		id, _ := x.(string)
		if indexOf(m.nets, "iface_id", id) < 0 {
			return reply{}, badRequest("The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface: %s", id)
		}
	}
	m.mmdsConfig = o
	m.configured = true
	return reply{}, nil
}

func (fc *server) getBalloon(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.balloon == nil {
		return reply{}, badRequest("Balloon config error: No balloon device found.")
	}
	return reply{body: view(balloonSchema, m.balloon, m.version)}, nil
}

// balloonAmount returns the balloon size field name of the release.
func (m *vm) balloonAmount() string {
	if m.version.AtLeast(v0_24_3) {
		return "amount_mib"
	}
	return "amount_mb"
}

func (fc *server) putBalloon(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, balloonSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if num(o, m.balloonAmount()) > m.memMiB() {
		return reply{}, badRequest("Balloon config error: Amount of pages requested is too large.")
	}
	m.balloon = o
	m.configured = true
	return reply{}, nil
}

func (fc *server) patchBalloon(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, balloonUpdateSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.balloon == nil {
		return reply{}, badRequest("Balloon update error: No balloon device found.")
	}
	if m.testGuest {
		if m.version.AtLeast(v1_14) {
			return reply{}, badRequest("Balloon update error: Balloon: Device not activated yet.")
		}
		return reply{}, badRequest("Balloon config error: Error creating the balloon device: DeviceNotActive")
	}
	key := m.balloonAmount()
	if mem := m.memMiB(); num(o, key) > mem {
		return reply{}, badRequest("Balloon update error: Amount of pages requested cannot be greater than the total amount of pages.")
	}
	m.balloon[key] = o[key]
	return reply{}, nil
}

// memMiB returns the guest memory size (128 MiB by default).
func (m *vm) memMiB() int64 {
	if n := num(m.machine, "mem_size_mib"); n > 0 {
		return n
	}
	return 128
}

func (fc *server) getBalloonStats(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.balloon == nil {
		return reply{}, badRequest("Balloon config error: No balloon device found.")
	}
	if num(m.balloon, "stats_polling_interval_s") == 0 {
		return reply{}, badRequest("Balloon config error: Statistics for the balloon device are not enabled")
	}
	mib := num(m.balloon, m.balloonAmount())
	pages := mib * 256
	total := m.memMiB() << 20
	out := orderedObject{{"target_pages", pages}, {"actual_pages", pages}, {"target_mib", mib}, {"actual_mib", mib}}
	if !m.testGuest {
		// A guest with a balloon driver reports its memory too; the test
		// guest reports nothing.
		out = append(out, kv{"free_memory", total - mib<<20}, kv{"total_memory", total}, kv{"available_memory", total - mib<<20})
	}
	return reply{body: out}, nil
}

func (fc *server) patchBalloonStats(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, balloonStatsUpdateSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.balloon == nil {
		return reply{}, badRequest("Balloon update error: No balloon device found.")
	}
	was, now := num(m.balloon, "stats_polling_interval_s"), num(o, "stats_polling_interval_s")
	if (was == 0) != (now == 0) {
		return reply{}, badRequest("Balloon update error: Cannot enable/disable the statistics after boot.")
	}
	m.balloon["stats_polling_interval_s"] = o["stats_polling_interval_s"]
	return reply{}, nil
}

func (fc *server) getHinting(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.balloon == nil || !flag(m.balloon, "free_page_hinting") {
		return reply{}, badRequest("Balloon config error: Free page hinting is not enabled.")
	}
	cmd := 0
	if m.hinting {
		cmd = 1
	}
	return reply{body: orderedObject{{"host_cmd", cmd}, {"guest_cmd", cmd}}}, nil
}

func (fc *server) setHinting(r *request, on bool) (reply, error) {
	m := fc.vm
	if len(bytes.TrimSpace(r.body)) > 0 {
		if _, err := decodeBody(r.body, balloonStartSchema, m.version, true); err != nil {
			return reply{}, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.balloon == nil || !flag(m.balloon, "free_page_hinting") {
		return reply{}, badRequest("Balloon config error: Free page hinting is not enabled.")
	}
	m.hinting = on
	return reply{}, nil
}

func (fc *server) startHinting(r *request) (reply, error) { return fc.setHinting(r, true) }
func (fc *server) stopHinting(r *request) (reply, error)  { return fc.setHinting(r, false) }

func (fc *server) putEntropy(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, entropySchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entropy = o
	m.configured = true
	return reply{}, nil
}

func (fc *server) putCPUConfig(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, cpuConfigSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cpuConfig = o
	m.configured = true
	// A custom template replaces the static one; releases before v1.14 then
	// report cpu_template "None" (seen with v1.7, not with v1.14).
	if !m.version.AtLeast(v1_14) {
		m.machine["cpu_template"] = "None"
	}
	return reply{}, nil
}

func (fc *server) putSerial(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, serialSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	var f *os.File
	if p := str(o, "serial_out_path"); p != "" {
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return reply{}, badRequest("Failed to open the serial output file: %v", pathErr(err))
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f != nil {
		if m.serialFile != nil {
			_ = m.serialFile.Close()
		}
		m.serialFile = f
		m.console = f
	}
	m.serial = o
	return reply{}, nil
}

func (fc *server) putHotplug(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, hotplugSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	full := view(hotplugSchema, o, m.version)
	for _, e := range full {
		o[e.key] = e.val
	}
	total, slot, block := num(o, "total_size_mib"), num(o, "slot_size_mib"), num(o, "block_size_mib")
	switch {
	case block == 0 || slot == 0 || slot%block != 0:
		return reply{}, badRequest("Memory hotplug config error: Slot size must be a non-zero multiple of block size (%d MiB)", block)
	case total%slot != 0:
		return reply{}, badRequest("Memory hotplug config error: Total size must be a multiple of slot size (%d MiB)", slot)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hotplug = o
	m.configured = true
	return reply{}, nil
}

func (fc *server) getHotplug(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hotplug == nil {
		return reply{}, badRequest("Memory hotplug error: the memory hotplug device is not configured.")
	}
	return reply{body: orderedObject{
		{"total_size_mib", num(m.hotplug, "total_size_mib")},
		{"slot_size_mib", num(m.hotplug, "slot_size_mib")},
		{"block_size_mib", num(m.hotplug, "block_size_mib")},
		{"plugged_size_mib", m.hotplugReq},
		{"requested_size_mib", m.hotplugReq},
	}}, nil
}

func (fc *server) patchHotplug(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, hotplugUpdateSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hotplug == nil {
		return reply{}, badRequest("Memory hotplug error: the memory hotplug device is not configured.")
	}
	req := num(o, "requested_size_mib")
	if req > num(m.hotplug, "total_size_mib") || req%num(m.hotplug, "block_size_mib") != 0 {
		return reply{}, badRequest("Memory hotplug error: invalid requested size %d MiB", req)
	}
	m.hotplugReq = req
	return reply{}, nil
}

func (fc *server) putPmem(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, pmemSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if str(o, "id") != r.id {
		return reply{}, badRequest("The id from the path does not match the id from the body!")
	}
	if _, err := os.Stat(str(o, "path_on_host")); err != nil {
		return reply{}, badRequest("Pmem config error: cannot open the backing file: %v", pathErr(err))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if i := indexOf(m.pmem, "id", r.id); i >= 0 {
		m.pmem[i] = o
	} else {
		m.pmem = append(m.pmem, o)
	}
	m.configured = true
	return reply{}, nil
}

func (fc *server) patchPmem(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, partialPmemSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if str(o, "id") != r.id {
		return reply{}, badRequest("The id from the path does not match the id from the body!")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i := indexOf(m.pmem, "id", r.id)
	if i < 0 {
		return reply{}, badRequest("Pmem update error: device not found: %s", r.id)
	}
	if x := o["rate_limiter"]; x != nil {
		m.pmem[i]["rate_limiter"] = x
	}
	return reply{}, nil
}
