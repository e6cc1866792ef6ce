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

// upsert replaces the object of list whose key field is o's, or appends o.
func upsert(list []object, key string, o object) []object {
	if i := indexOf(list, key, str(o, key)); i >= 0 {
		list[i] = o
		return list
	}
	return append(list, o)
}

// checkID checks that device body o names, in its key field, the device
// of the path.
func checkID(r *request, o object, key string) error {
	if str(o, key) != r.id {
		return badRequest(msgIDMismatch)
	}
	return nil
}

// decodeDevice decodes the body of a request on a device named by its ID
// in the path against s, and checks the body names the same device in its
// key field.
func (fc *server) decodeDevice(r *request, s *schema, key string) (object, error) {
	o, err := decodeBody(r.body, s, fc.vm.version, false)
	if err != nil {
		return nil, err
	}
	if err := checkID(r, o, key); err != nil {
		return nil, err
	}
	return o, nil
}

// change decodes r's body against s and runs set on it with the VM
// locked.
func (fc *server) change(r *request, s *schema, set func(m *vm, o object) error) (reply, error) {
	o, err := decodeBody(r.body, s, fc.vm.version, false)
	if err != nil {
		return reply{}, err
	}
	return fc.vm.change(o, set)
}

// change runs set on o with the VM locked.
func (m *vm) change(o object, set func(m *vm, o object) error) (reply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := set(m, o); err != nil {
		return reply{}, err
	}
	return reply{}, nil
}

// configured returns set for a request that sets part of the boot
// configuration: once set succeeds the VM counts as configured, so that a
// snapshot load is refused.
func configured(set func(m *vm, o object) error) func(m *vm, o object) error {
	return func(m *vm, o object) error {
		if err := set(m, o); err != nil {
			return err
		}
		m.configured = true
		return nil
	}
}

// configure answers a pre-boot PUT that sets part of the boot
// configuration: change, after which the VM counts as configured.
func (fc *server) configure(r *request, s *schema, set func(m *vm, o object) error) (reply, error) {
	return fc.change(r, s, configured(set))
}

// configureDevice is configure for a device named by its ID in the path:
// the body's key field must hold the same ID.
func (fc *server) configureDevice(r *request, s *schema, key string, set func(m *vm, o object) error) (reply, error) {
	return fc.configure(r, s, func(m *vm, o object) error {
		if err := checkID(r, o, key); err != nil {
			return err
		}
		return set(m, o)
	})
}

// patchDevice copies the non-null fields of device body o into the device
// of the list that devices picks whose key field is o's, with the VM
// locked. notFound is the fault, formatted with the ID, when there is no
// such device.
func (m *vm) patchDevice(devices func(m *vm) []object, key string, o object, notFound string) (reply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := devices(m)
	i := indexOf(list, key, str(o, key))
	if i < 0 {
		return reply{}, badRequest(notFound, str(o, key))
	}
	for k, x := range o {
		if x != nil {
			list[i][k] = x
		}
	}
	return reply{}, nil
}

func (fc *server) putDrive(r *request) (reply, error) {
	return fc.configureDevice(r, driveSchema, "drive_id", func(m *vm, o object) error {
		if str(o, "socket") == "" {
			p, set := o["path_on_host"].(string)
			if !set {
				return badRequest("Drive config error: Unable to create the virtio block device: Invalid block config.")
			}
			if _, err := os.Stat(p); err != nil {
				return badRequest("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: %v %s", pathErr(err), p)
			}
		}
		root := flag(o, "is_root_device")
		if root {
			for _, d := range m.drives {
				if flag(d, "is_root_device") && str(d, "drive_id") != r.id {
					return badRequest("Drive config error: A root block device already exists!")
				}
			}
		}
		if root && indexOf(m.drives, "drive_id", r.id) < 0 {
			// The root device is listed first, as Firecracker orders it.
			m.drives = append([]object{o}, m.drives...)
		} else {
			m.drives = upsert(m.drives, "drive_id", o)
		}
		return nil
	})
}

func (fc *server) patchDrive(r *request) (reply, error) {
	o, err := fc.decodeDevice(r, partialDriveSchema, "drive_id")
	if err != nil {
		return reply{}, err
	}
	if p, set := o["path_on_host"].(string); set {
		if _, err := os.Stat(p); err != nil {
			return reply{}, badRequest("Drive update error: Unable to patch the block device: Virtio backend error: Error manipulating the backing file: %v %s", pathErr(err), p)
		}
	}
	rep, err := fc.vm.patchDevice(func(m *vm) []object { return m.drives }, "drive_id", o, "Drive update error: Unable to patch the block device: Invalid block device ID %q.")
	if err != nil {
		return rep, err
	}
	if p, set := o["path_on_host"].(string); set {
		if err := fc.vm.swapSimDrive(r.id, p); err != nil {
			return reply{}, badRequest("Drive update error: Unable to patch the block device: %v", err)
		}
	}
	fc.vm.log.info("fc_api", "Updated block device %q.", r.id)
	return rep, nil
}

func (fc *server) putNet(r *request) (reply, error) {
	return fc.configureDevice(r, netSchema, "iface_id", func(m *vm, o object) error {
		if mac := str(o, "guest_mac"); mac != "" {
			if hw, err := net.ParseMAC(mac); err != nil || len(hw) != 6 {
				line, col := position(r.body, int64(len(r.body)))
				return &decodeError{msg: "The provided MAC address is invalid.", line: line, column: col}
			}
		}
		tap := str(o, "host_dev_name")
		if len(tap) == 0 || len(tap) > 15 {
			return badRequest("Network interface error: Could not create the network device: Open tap device failed: invalid interface name %q", tap)
		}
		for _, n := range m.nets {
			if str(n, "iface_id") != r.id && str(n, "host_dev_name") == tap {
				return badRequest("Network interface error: The host device name %s is already in use.", tap)
			}
			if str(n, "iface_id") != r.id && o["guest_mac"] != nil && str(n, "guest_mac") == str(o, "guest_mac") {
				return badRequest("Network interface error: The MAC address is already in use: %s", str(o, "guest_mac"))
			}
		}
		m.nets = upsert(m.nets, "iface_id", o)
		return nil
	})
}

func (fc *server) patchNet(r *request) (reply, error) {
	o, err := fc.decodeDevice(r, partialNetSchema, "iface_id")
	if err != nil {
		return reply{}, err
	}
	return fc.vm.patchDevice(func(m *vm) []object { return m.nets }, "iface_id", o, "Network interface update error: Device not found: %s")
}

func (fc *server) putVsock(r *request) (reply, error) {
	return fc.configure(r, vsockSchema, func(m *vm, o object) error {
		if m.vsockLn != nil {
			m.vsockLn.close()
			m.vsockLn = nil
		}
		ln, err := listenVsock(str(o, "uds_path"))
		if err != nil {
			return badRequest("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: %v", err)
		}
		m.vsockLn = ln
		m.vsock = o
		return nil
	})
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
	return fc.configure(r, mmdsConfigSchema, func(m *vm, o object) error {
		if ip := str(o, "ipv4_address"); ip != "" {
			a := net.ParseIP(ip)
			if a == nil || a.To4() == nil || !a.IsLinkLocalUnicast() {
				return badRequest("The MMDS could not be configured to listen on the IPv4 address %s: it must be link-local.", ip)
			}
		}
		ifaces, _ := o["network_interfaces"].([]any)
		if m.version.AtLeast(v1_0) && len(ifaces) == 0 {
			return badRequest("The list of network interface IDs that allow forwarding MMDS requests is empty.")
		}
		for _, x := range ifaces {
			id, _ := x.(string)
			if indexOf(m.nets, "iface_id", id) < 0 {
				return badRequest("The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface: %s", id)
			}
		}
		m.mmdsConfig = o
		return nil
	})
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
	return fc.configure(r, balloonSchema, func(m *vm, o object) error {
		if num(o, m.balloonAmount()) > m.memMiB() {
			return badRequest("Balloon config error: Amount of pages requested is too large.")
		}
		m.balloon = o
		return nil
	})
}

func (fc *server) patchBalloon(r *request) (reply, error) {
	return fc.change(r, balloonUpdateSchema, func(m *vm, o object) error {
		if m.balloon == nil {
			return badRequest("Balloon update error: No balloon device found.")
		}
		if m.testGuest {
			if m.version.AtLeast(v1_14) {
				return badRequest("Balloon update error: Balloon: Device not activated yet.")
			}
			return badRequest("Balloon config error: Error creating the balloon device: DeviceNotActive")
		}
		key := m.balloonAmount()
		if mem := m.memMiB(); num(o, key) > mem {
			return badRequest("Balloon update error: Amount of pages requested cannot be greater than the total amount of pages.")
		}
		m.balloon[key] = o[key]
		return nil
	})
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
	return fc.change(r, balloonStatsUpdateSchema, func(m *vm, o object) error {
		if m.balloon == nil {
			return badRequest("Balloon update error: No balloon device found.")
		}
		was, now := num(m.balloon, "stats_polling_interval_s"), num(o, "stats_polling_interval_s")
		if (was == 0) != (now == 0) {
			return badRequest("Balloon update error: Cannot enable/disable the statistics after boot.")
		}
		m.balloon["stats_polling_interval_s"] = o["stats_polling_interval_s"]
		return nil
	})
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
	return fc.configure(r, entropySchema, func(m *vm, o object) error {
		m.entropy = o
		return nil
	})
}

func (fc *server) putCPUConfig(r *request) (reply, error) {
	return fc.configure(r, cpuConfigSchema, func(m *vm, o object) error {
		m.cpuConfig = o
		// A custom template replaces the static one; releases before v1.14
		// then report cpu_template "None" (seen with v1.7, not with v1.14).
		if !m.version.AtLeast(v1_14) {
			m.machine["cpu_template"] = "None"
		}
		return nil
	})
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
	return fc.configure(r, hotplugSchema, func(m *vm, o object) error {
		for _, e := range view(hotplugSchema, o, m.version) {
			o[e.key] = e.val
		}
		total, slot, block := num(o, "total_size_mib"), num(o, "slot_size_mib"), num(o, "block_size_mib")
		switch {
		case block == 0 || slot == 0 || slot%block != 0:
			return badRequest("Memory hotplug config error: Slot size must be a non-zero multiple of block size (%d MiB)", block)
		case total%slot != 0:
			return badRequest("Memory hotplug config error: Total size must be a multiple of slot size (%d MiB)", slot)
		}
		m.hotplug = o
		return nil
	})
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
	return fc.change(r, hotplugUpdateSchema, func(m *vm, o object) error {
		if m.hotplug == nil {
			return badRequest("Memory hotplug error: the memory hotplug device is not configured.")
		}
		req := num(o, "requested_size_mib")
		if req > num(m.hotplug, "total_size_mib") || req%num(m.hotplug, "block_size_mib") != 0 {
			return badRequest("Memory hotplug error: invalid requested size %d MiB", req)
		}
		m.hotplugReq = req
		return nil
	})
}

func (fc *server) putPmem(r *request) (reply, error) {
	return fc.configureDevice(r, pmemSchema, "id", func(m *vm, o object) error {
		if _, err := os.Stat(str(o, "path_on_host")); err != nil {
			return badRequest("Pmem config error: cannot open the backing file: %v", pathErr(err))
		}
		m.pmem = upsert(m.pmem, "id", o)
		return nil
	})
}

func (fc *server) patchPmem(r *request) (reply, error) {
	o, err := fc.decodeDevice(r, partialPmemSchema, "id")
	if err != nil {
		return reply{}, err
	}
	return fc.vm.patchDevice(func(m *vm) []object { return m.pmem }, "id", o, "Pmem update error: device not found: %s")
}
