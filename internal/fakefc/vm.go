package fakefc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// vmState is the microVM's state as GET / reports it.
type vmState int

const (
	notStarted vmState = iota
	running
	paused
)

// String returns the state as the API spells it.
func (s vmState) String() string {
	switch s {
	case running:
		return "Running"
	case paused:
		return "Paused"
	}
	return "Not started"
}

// vm is the emulated microVM: its configuration and state.
type vm struct {
	version   Version
	id        string
	log       *logger
	mmdsLimit int

	mu         sync.Mutex // guards the fields below
	state      vmState
	configured bool      // a boot-specific resource was set: snapshot load refused
	console    io.Writer // the serial console: stdout, or the PUT /serial file
	serialFile *os.File
	machine    object
	boot       object // nil until PUT /boot-source
	drives     []object
	nets       []object
	vsock      object
	vsockLn    *vsockListener // the bound uds_path of vsock
	loggerCfg  object
	metrics    object
	metricsOut *os.File
	mmdsConfig object
	mmds       any
	balloon    object
	entropy    object
	cpuConfig  object
	serial     object
	hotplug    object
	hotplugReq int64
	pmem       []object
	hinting    bool
	pendingCAD bool // SendCtrlAltDel arrived while paused
	// testGuest is set when the kernel is kindling's tiny test guest, which
	// drives no virtio device: device updates that need the guest driver
	// fail as they do under a real Firecracker.
	testGuest bool
	// sim is the simulated guest booted from the root drive's image, nil
	// for an emulated one (see sim.go).
	sim *simGuest
	// simPending: a simulated snapshot was loaded paused; its guest boots
	// at the first resume, from the drives as they are then (a drive
	// switched by PATCH before the resume is the one booted, as a real
	// guest would only then touch it).
	simPending bool
	startedAt  time.Time
}

func newVM(v Version, id string, stdout io.Writer, log *logger, mmdsLimit int) *vm {
	if mmdsLimit <= 0 {
		mmdsLimit = 51200
	}
	return &vm{version: v, id: id, log: log, console: stdout, mmdsLimit: mmdsLimit, machine: object{}}
}

// started reports whether InstanceStart or a snapshot load happened.
func (m *vm) started() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state != notStarted
}

// num returns the integer field key of o (0 when unset).
func num(o object, key string) int64 {
	switch x := o[key].(type) {
	case json.Number:
		n, _ := x.Int64()
		return n
	case float64:
		return int64(x)
	case int:
		return int64(x)
	case int64:
		return x
	}
	return 0
}

// str returns the string field key of o ("" when unset).
func str(o object, key string) string {
	s, _ := o[key].(string)
	return s
}

// flag returns the boolean field key of o (false when unset).
func flag(o object, key string) bool {
	b, _ := o[key].(bool)
	return b
}

// asObject converts a decoded JSON object (from a snapshot file) to object.
func asObject(x any) object {
	switch o := x.(type) {
	case object:
		return o
	case map[string]any:
		return object(o)
	}
	return nil
}

func (fc *server) getInstance(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	return reply{body: orderedObject{
		{"id", m.id}, {"state", m.state.String()}, {"vmm_version", m.version.String()}, {"app_name", "Firecracker"},
	}}, nil
}

func (fc *server) getVersion(*request) (reply, error) {
	return reply{body: map[string]string{"firecracker_version": fc.vm.version.String()}}, nil
}

func (fc *server) getMachineConfig(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	return reply{body: view(machineConfigSchema, m.machine, m.version)}, nil
}

// checkMachine validates a machine configuration's values.
func checkMachine(o object) error {
	if _, set := o["vcpu_count"]; set {
		n := num(o, "vcpu_count")
		if n < 1 || n > 32 || (flag(o, "smt") && n > 1 && n%2 == 1) {
			return badRequest("Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.")
		}
	}
	if _, set := o["mem_size_mib"]; set && num(o, "mem_size_mib") == 0 {
		return badRequest("Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.")
	}
	return nil
}

func (fc *server) putMachineConfig(r *request) (reply, error) {
	return fc.setMachineConfig(r, false)
}

func (fc *server) patchMachineConfig(r *request) (reply, error) {
	return fc.setMachineConfig(r, true)
}

// setMachineConfig answers PUT /machine-config, which replaces the machine
// configuration, and PATCH (partial), which changes the fields it gives.
func (fc *server) setMachineConfig(r *request, partial bool) (reply, error) {
	o, err := decodeBody(r.body, machineConfigSchema, fc.vm.version, partial)
	if err != nil {
		return reply{}, err
	}
	return fc.vm.change(o, configured(func(m *vm, o object) error {
		if err := checkMachine(o); err != nil {
			return err
		}
		if partial {
			maps.Copy(m.machine, o)
		} else {
			m.machine = o
		}
		return nil
	}))
}

func (fc *server) putBootSource(r *request) (reply, error) {
	return fc.configure(r, bootSourceSchema, func(m *vm, o object) error {
		if err := canOpen(str(o, "kernel_image_path")); err != nil {
			return badRequest("Boot source error: The kernel file cannot be opened: %v", pathErr(err))
		}
		if p := str(o, "initrd_path"); p != "" {
			if err := canOpen(p); err != nil {
				return badRequest("Boot source error: The initrd file cannot be opened due to invalid permissions or missing file: %v", pathErr(err))
			}
		}
		m.boot = o
		return nil
	})
}

// canOpen reports whether path can be opened for reading.
func canOpen(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// pathErr renders an I/O error as Rust's io::Error does: the system error
// text capitalised, with its errno and without the path, e.g. "No such file
// or directory (os error 2)".
func pathErr(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		t := errno.Error()
		if t != "" {
			t = strings.ToUpper(t[:1]) + t[1:]
		}
		return fmt.Sprintf("%s (os error %d)", t, int(errno))
	}
	return err.Error()
}

// getVMConfig answers GET /vm/config in the shape of the emulated release.
func (fc *server) getVMConfig(*request) (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.version
	opt := func(s *schema, o object) any {
		if o == nil {
			return nil
		}
		return view(s, o, v)
	}
	list := func(s *schema, os []object) []any {
		out := make([]any, 0, len(os))
		for _, o := range os {
			out = append(out, view(s, o, v))
		}
		return out
	}
	boot := m.boot
	if boot == nil {
		boot = object{}
	}
	var mmdsCfg any
	if m.mmdsConfig != nil {
		mmdsCfg = view(mmdsConfigSchema, m.mmdsConfig, v)
	}
	if !v.AtLeast(v1_1) {
		return reply{body: orderedObject{
			{"balloon_device", opt(balloonSchema, m.balloon)},
			{"block_devices", list(driveSchema, m.drives)},
			{"boot_source", view(bootSourceSchema, boot, v)},
			{"logger", nil},
			{"machine_config", view(machineConfigSchema, m.machine, v)},
			{"metrics", opt(metricsSchema, m.metrics)},
			{"mmds_config", mmdsCfg},
			{"net_devices", list(netSchema, m.nets)},
			{"vsock_device", opt(vsockSchema, m.vsock)},
		}}, nil
	}
	out := orderedObject{
		{"balloon", opt(balloonSchema, m.balloon)},
		{"drives", list(driveSchema, m.drives)},
		{"boot-source", view(bootSourceSchema, boot, v)},
	}
	// Firecracker shows neither the logger nor the custom CPU template
	// here, even once they are set.
	if v.AtLeast(v1_4) {
		out = append(out, kv{"cpu-config", nil})
	}
	out = append(out,
		kv{"logger", nil},
		kv{"machine-config", view(machineConfigSchema, m.machine, v)},
		kv{"metrics", opt(metricsSchema, m.metrics)},
		kv{"mmds-config", mmdsCfg},
		kv{"network-interfaces", list(netSchema, m.nets)},
		kv{"vsock", opt(vsockSchema, m.vsock)},
	)
	if v.AtLeast(v1_4) {
		out = append(out, kv{"entropy", opt(entropySchema, m.entropy)})
	}
	if v.AtLeast(v1_14) {
		out = append(out, kv{"pmem", list(pmemSchema, m.pmem)}, kv{"memory-hotplug", opt(hotplugSchema, m.hotplug)})
	}
	return reply{body: out}, nil
}

func (fc *server) putAction(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, actionSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	action := str(o, "action_type")
	started := m.started()
	switch action {
	case "InstanceStart":
		if started {
			return reply{}, badRequest(msgAfterStart)
		}
		return fc.instanceStart()
	case "SendCtrlAltDel":
		if !started {
			return reply{}, badRequest(msgBeforeStart)
		}
		return fc.ctrlAltDel()
	case "FlushMetrics":
		if !started {
			return reply{}, badRequest(msgBeforeStart)
		}
		return reply{}, fc.flushMetrics()
	}
	// BlockDeviceRescan (before v1.0): the drive is re-read; nothing to do.
	if !started {
		return reply{}, badRequest(msgBeforeStart)
	}
	return reply{}, nil
}

func (fc *server) patchVM(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, vmStateSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.simPending && str(o, "state") == "Resumed" {
		booted, err := fc.bootSimulated()
		if err == nil && !booted {
			err = errors.New("the root drive holds no bootable image")
		}
		if err != nil {
			return reply{}, badRequest("Failed to boot the simulated guest afresh: %v", err)
		}
		m.simPending = false
	} else if m.sim != nil {
		change := m.sim.resume
		if str(o, "state") == "Paused" {
			change = m.sim.pause
		}
		if err := change(); err != nil {
			return reply{}, badRequest("%v", err)
		}
	}
	if str(o, "state") == "Paused" {
		m.state = paused
		m.log.info("fc_api", "Paused the microVM.")
		return reply{}, nil
	}
	m.state = running
	m.log.info("fc_api", "Resumed the microVM.")
	if m.pendingCAD {
		return reply{after: fc.powerOff}, nil
	}
	return reply{}, nil
}

// ctrlAltDel emulates the guest's reaction to Ctrl-Alt-Del.
func (fc *server) ctrlAltDel() (reply, error) {
	if fc.settings.CtrlAltDel == CtrlAltDelIgnore {
		return reply{}, nil
	}
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sim != nil {
		m.sim.ctrlAltDel()
		return reply{}, nil
	}
	if m.state == paused {
		// A paused guest cannot react until it is resumed.
		m.pendingCAD = true
		return reply{}, nil
	}
	return reply{after: fc.powerOff}, nil
}

// powerOff ends the process as a guest-initiated shutdown does.
func (fc *server) powerOff() {
	time.Sleep(5 * time.Millisecond)
	fc.log.info("main", "Vmm is stopping.")
	fc.exit(ExitOK)
}

// openMetrics opens the metrics file (it must exist, as with Firecracker).
func (m *vm) openMetrics(path string) error {
	f, err := openLogFile(path)
	if err != nil {
		return fmt.Errorf("open metrics file %q: %w", path, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.metricsOut != nil {
		_ = m.metricsOut.Close()
	}
	m.metricsOut = f
	m.metrics = object{"metrics_path": path}
	return nil
}

func (fc *server) putMetrics(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, metricsSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	if err := m.openMetrics(str(o, "metrics_path")); err != nil {
		return reply{}, badRequest("Metrics error: Cannot initialize the metrics system due to bad user input: %v", pathErr(err))
	}
	return reply{}, nil
}

// flushMetrics writes one JSON line of metrics, when metrics are set up.
func (fc *server) flushMetrics() error {
	m := fc.vm
	fc.mu.Lock()
	n := fc.requests
	fc.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.metricsOut == nil {
		return nil
	}
	line, err := json.Marshal(orderedObject{
		{"utc_timestamp_ms", time.Now().UnixMilli()},
		{"api_server", map[string]int{"requests": n}},
		{"vmm", map[string]any{"state": m.state.String(), "vcpus": num(m.machine, "vcpu_count")}},
	})
	if err != nil {
		return err
	}
	if _, err := m.metricsOut.Write(append(line, '\n')); err != nil {
		return badRequest("Metrics error: %v", err)
	}
	return nil
}

func (fc *server) putLogger(r *request) (reply, error) {
	m := fc.vm
	o, err := decodeBody(r.body, loggerSchema, m.version, false)
	if err != nil {
		return reply{}, err
	}
	var f *os.File
	if p := str(o, "log_path"); p != "" {
		f, err = openLogFile(p)
		if err != nil {
			return reply{}, badRequest("Logger error: Failed to open target file: %v", pathErr(err))
		}
	}
	l := fc.log
	if f != nil {
		l.setFile(f)
	}
	l.mu.Lock()
	if lv := str(o, "level"); lv != "" {
		l.max, _ = parseLevel(lv)
	}
	if _, set := o["show_level"]; set {
		l.showLevel = flag(o, "show_level")
	}
	if _, set := o["show_log_origin"]; set {
		l.showOrigin = flag(o, "show_log_origin")
	}
	l.mu.Unlock()
	m.mu.Lock()
	m.loggerCfg = o
	m.mu.Unlock()
	return reply{}, nil
}
