package fakefc_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// settingsFor returns a FAKEFC value emulating version with extra settings.
func settingsFor(version string, extra string) string {
	s := fmt.Sprintf(`{"version":%q`, version)
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

// boot configures p with a kernel and a root drive and starts it.
func boot(t *testing.T, p *proc, kernel string, vcpus int) {
	t.Helper()
	rootfs := writeFile(t, p.dir, "rootfs.img", "")
	p.must(204, "PUT", "/machine-config", fmt.Sprintf(`{"vcpu_count":%d,"mem_size_mib":64}`, vcpus))
	p.must(204, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":"console=ttyS0"}`, kernel))
	p.must(204, "PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":false}`, rootfs))
	p.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
}

func TestFieldsPerVersion(t *testing.T) {
	tests := []struct {
		name       string
		version    string
		method     string
		path       string
		body       string
		wantStatus int
		wantFault  string
	}{
		{"huge_pages refused by 1.5", "1.5.1", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64,"huge_pages":"None"}`, 400, "unknown field `huge_pages`"},
		{"huge_pages accepted by 1.7", "1.7.0", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64,"huge_pages":"2M"}`, 204, ""},
		{"smt accepted by 1.0", "1.0.0", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"smt":false}`, 204, ""},
		{"ht_enabled refused by 1.0", "1.0.0", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"ht_enabled":false}`, 400, "unknown field `ht_enabled`"},
		{"ht_enabled required by 0.25", "0.25.0", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64}`, 400, "missing field `ht_enabled`"},
		{"smt refused by 0.25", "0.25.0", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"ht_enabled":false,"smt":false}`, 400, "unknown field `smt`"},
		{"mem_size_mib required", "1.14.2", "PUT", "/machine-config", `{"vcpu_count":2}`, 400, "missing field `mem_size_mib`"},
		{"huge_pages value unknown", "1.14.2", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64,"huge_pages":"1G"}`, 400, "unknown variant `1G`"},
		{"vsock_id required by 0.25", "0.25.0", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"v.sock"}`, 400, "missing field `vsock_id`"},
		{"vsock_id accepted by 1.14", "1.14.2", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"v.sock","vsock_id":"v"}`, 204, ""},
		{"mtu refused by 1.14", "1.14.2", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","mtu":1400}`, 400, "unknown field `mtu`"},
		{"mtu accepted by 1.16", "1.16.1", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","mtu":1400}`, 204, ""},
		{"clock_realtime refused by 1.14.2", "1.14.2", "PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m","clock_realtime":true}`, 400, "unknown field `clock_realtime`"},
		{"snapshot version refused by 1.7", "1.7.0", "PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m","version":"1.0.0"}`, 400, "unknown field `version`"},
		{"io_engine refused by 0.25", "0.25.0", "PUT", "/drives/d", `{"drive_id":"d","path_on_host":"/dev/null","is_root_device":false,"is_read_only":true,"io_engine":"Sync"}`, 400, "unknown field `io_engine`"},
		{"is_read_only required by 1.5", "1.5.1", "PUT", "/drives/d", `{"drive_id":"d","path_on_host":"/dev/null","is_root_device":false}`, 400, "missing field `is_read_only`"},
		{"is_read_only optional in 1.7", "1.7.0", "PUT", "/drives/d", `{"drive_id":"d","path_on_host":"/dev/null","is_root_device":false}`, 204, ""},
		{"entropy unknown to 1.3", "1.3.1", "PUT", "/entropy", `{}`, 400, "Invalid request method and/or path"},
		{"entropy known to 1.4", "1.4.0", "PUT", "/entropy", `{}`, 204, ""},
		{"serial unknown to 1.13", "1.13.1", "PUT", "/serial", `{}`, 400, "Invalid request method and/or path"},
		{"rate limiter checked", "1.14.2", "PUT", "/entropy", `{"rate_limiter":{"bandwidth":{"size":1}}}`, 400, "missing field `refill_time`"},
		{"bad JSON", "1.14.2", "PUT", "/machine-config", `{"vcpu_count":`, 400, "An error occurred when deserializing the json body of a request"},
		{"wrong type", "1.14.2", "PUT", "/machine-config", `{"vcpu_count":"two","mem_size_mib":64}`, 400, "invalid type: string"},
		{"unknown endpoint", "1.14.2", "GET", "/nope", "", 400, "Invalid request method and/or path: GET nope."},
		{"wrong method", "1.14.2", "GET", "/boot-source", "", 400, "Invalid request method and/or path"},
		{"unsupported method", "1.14.2", "DELETE", "/machine-config", "", 400, ""},
		{"version endpoint from 1.0", "1.0.0", "GET", "/version", "", 200, ""},
		{"no version endpoint before 1.0", "0.25.0", "GET", "/version", "", 400, "Invalid request method and/or path"},
		{"start without kernel", "1.14.2", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "without kernel configuration"},
		{"kernel missing", "1.14.2", "PUT", "/boot-source", `{"kernel_image_path":"/nonexistent/vmlinux"}`, 400, "No such file or directory (os error 2)"},
		{"drive id mismatch", "1.14.2", "PUT", "/drives/a", `{"drive_id":"b","path_on_host":"/dev/null","is_root_device":false,"is_read_only":true}`, 400, "does not match"},
		{"drive file missing", "1.14.2", "PUT", "/drives/a", `{"drive_id":"a","path_on_host":"/nonexistent","is_root_device":false,"is_read_only":true}`, 400, "No such file or directory"},
		{"load needs memory", "1.14.2", "PUT", "/snapshot/load", `{"snapshot_path":"s"}`, 400, "either `mem_backend` or `mem_file_path` is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := spawn(t, spawnOpts{settings: settingsFor(tt.version, "")})
			status, body := p.do(tt.method, tt.path, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("%s %s: status %d, want %d: %s", tt.method, tt.path, status, tt.wantStatus, body)
			}
			if tt.wantFault != "" && !strings.Contains(fault(t, body), tt.wantFault) {
				t.Errorf("fault %q, want it to contain %q", fault(t, body), tt.wantFault)
			}
			if p.exited() {
				t.Errorf("process exited after a refused request: %v", p.state)
			}
		})
	}
}

func TestInstanceInfo(t *testing.T) {
	tests := []struct {
		version     string
		wantVersion int // status of GET /version
	}{
		{"1.14.2", 200},
		{"1.7.0", 200},
		{"0.25.0", 400},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			p := spawn(t, spawnOpts{settings: settingsFor(tt.version, "")})
			var info struct {
				ID, State, VMMVersion, AppName string
			}
			body := p.must(200, "GET", "/", "")
			if err := json.Unmarshal([]byte(strings.NewReplacer("vmm_version", "VMMVersion", "app_name", "AppName").Replace(body)), &info); err != nil {
				t.Fatal(err)
			}
			if info.ID != "test-vm" || info.State != "Not started" || info.VMMVersion != tt.version || info.AppName != "Firecracker" {
				t.Errorf("GET / = %s", body)
			}
			status, body := p.do("GET", "/version", "")
			if status != tt.wantVersion {
				t.Fatalf("GET /version: %d %s", status, body)
			}
			if status == 200 && body != fmt.Sprintf(`{"firecracker_version":%q}`, tt.version) {
				t.Errorf("GET /version = %s", body)
			}
		})
	}
}

func TestVMConfigShape(t *testing.T) {
	tests := []struct {
		version string
		want    []string // keys of GET /vm/config
	}{
		{"1.0.0", []string{"balloon_device", "block_devices", "boot_source", "logger", "machine_config", "metrics", "mmds_config", "net_devices", "vsock_device"}},
		{"1.3.1", []string{"balloon", "boot-source", "drives", "logger", "machine-config", "metrics", "mmds-config", "network-interfaces", "vsock"}},
		{"1.7.0", []string{"balloon", "boot-source", "cpu-config", "drives", "entropy", "logger", "machine-config", "metrics", "mmds-config", "network-interfaces", "vsock"}},
		{"1.14.2", []string{"balloon", "boot-source", "cpu-config", "drives", "entropy", "logger", "machine-config", "memory-hotplug", "metrics", "mmds-config", "network-interfaces", "pmem", "vsock"}},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			p := spawn(t, spawnOpts{settings: settingsFor(tt.version, "")})
			var m map[string]json.RawMessage
			if err := json.Unmarshal([]byte(p.must(200, "GET", "/vm/config", "")), &m); err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tt.want) {
				t.Errorf("keys %v, want %v", keys, tt.want)
			}
		})
	}
}

func TestPhases(t *testing.T) {
	testutil.CheckLeaks(t)
	p := spawn(t, spawnOpts{})
	kernel := testutil.GuestKernel(t, guest.Options{Message: "ready", Mode: guest.Halt})
	// Post-boot calls before InstanceStart.
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/vm", `{"state":"Paused"}`},
		{"PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m"}`},
		{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`},
		{"PATCH", "/drives/rootfs", `{"drive_id":"rootfs"}`},
	} {
		status, body := p.do(c.method, c.path, c.body)
		if status != 400 || !strings.Contains(fault(t, body), "not supported before starting the microVM") {
			t.Errorf("%s %s before start: %d %s", c.method, c.path, status, body)
		}
	}
	boot(t, p, kernel, 1)
	disk := writeFile(t, p.dir, "disk2.img", "")
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`},
		{"PATCH", "/machine-config", `{"vcpu_count":2}`},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q}`, kernel)},
		{"PUT", "/drives/d2", fmt.Sprintf(`{"drive_id":"d2","path_on_host":%q,"is_root_device":false,"is_read_only":true}`, disk)},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"v.sock"}`},
		{"PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true}`},
		{"PUT", "/logger", `{"level":"Info"}`},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m"}`},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`},
	} {
		status, body := p.do(c.method, c.path, c.body)
		if status != 400 || !strings.Contains(fault(t, body), "not supported after starting the microVM") {
			t.Errorf("%s %s after start: %d %s", c.method, c.path, status, body)
		}
	}
	// Allowed after start.
	p.must(204, "PATCH", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q}`, disk))
	p.must(200, "GET", "/machine-config", "")
	p.must(204, "PUT", "/mmds", `{"latest":{"meta-data":{"id":"x"}}}`)
	p.must(204, "PATCH", "/mmds", `{"latest":{"meta-data":{"zone":"a"}}}`)
	if got := p.must(200, "GET", "/mmds", ""); !strings.Contains(got, `"zone":"a"`) || !strings.Contains(got, `"id":"x"`) {
		t.Errorf("GET /mmds = %s", got)
	}
	status, body := p.do("PATCH", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/nonexistent"}`)
	if status != 400 {
		t.Errorf("PATCH drive to a missing file: %d %s", status, body)
	}
}

func TestInstanceStart(t *testing.T) {
	tests := []struct {
		name        string
		kernel      func(t *testing.T, dir string) string
		vcpus       int
		wantConsole string
	}{
		{"test guest", func(t *testing.T, _ string) string {
			return testutil.GuestKernel(t, guest.Options{Message: "hello from the guest", Mode: guest.Halt})
		}, 2, "hello from the guest\n"},
		{"other kernel", func(t *testing.T, dir string) string {
			return writeFile(t, dir, "vmlinux", "not an ELF")
		}, 1, "fake-firecracker: guest started\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			p := spawn(t, spawnOpts{args: []string{"--log-path", os.DevNull}})
			boot(t, p, tt.kernel(t, p.dir), tt.vcpus)
			p.waitOutput(tt.wantConsole)
			names := p.threadNames()
			for i := range tt.vcpus {
				if want := fmt.Sprintf("fc_vcpu %d", i); !slices.Contains(names, want) {
					t.Errorf("threads %q: no %q", names, want)
				}
			}
			if slices.Contains(names, fmt.Sprintf("fc_vcpu %d", tt.vcpus)) {
				t.Errorf("threads %q: more vCPU threads than %d", names, tt.vcpus)
			}
			if !slices.Contains(names, "fc_api") {
				t.Errorf("threads %q: no fc_api", names)
			}
			if got := p.must(200, "GET", "/", ""); !strings.Contains(got, `"state":"Running"`) {
				t.Errorf("GET / = %s", got)
			}
			p.stillRunning(20 * time.Millisecond)
		})
	}
}

func TestGuestPowerOff(t *testing.T) {
	testutil.CheckLeaks(t)
	p := spawn(t, spawnOpts{})
	boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "bye", Mode: guest.PowerOff}), 1)
	if code, sig := p.waitExit(5 * time.Second); code != 0 || sig != 0 {
		t.Errorf("exit %d signal %v, want 0", code, sig)
	}
	if !strings.Contains(p.stdout.String(), "bye\n") {
		t.Errorf("stdout %q has no console output", p.stdout)
	}
	if _, err := os.Stat(p.sock); err != nil {
		t.Errorf("socket file removed at exit: %v", err)
	}
}

func TestPauseResume(t *testing.T) {
	testutil.CheckLeaks(t)
	p := spawn(t, spawnOpts{})
	boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "up"}), 1)
	for _, step := range []struct{ state, want string }{
		{"Paused", "Paused"}, {"Paused", "Paused"}, {"Resumed", "Running"}, {"Paused", "Paused"}, {"Resumed", "Running"},
	} {
		p.must(204, "PATCH", "/vm", fmt.Sprintf(`{"state":%q}`, step.state))
		if got := p.must(200, "GET", "/", ""); !strings.Contains(got, fmt.Sprintf(`"state":%q`, step.want)) {
			t.Fatalf("after %s: GET / = %s", step.state, got)
		}
	}
	status, body := p.do("PATCH", "/vm", `{"state":"Stopped"}`)
	if status != 400 || !strings.Contains(body, "unknown variant") {
		t.Errorf("PATCH /vm Stopped: %d %s", status, body)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	testutil.CheckLeaks(t)
	dir := testutil.ShortTempDir(t)
	kernel := testutil.GuestKernel(t, guest.Options{Message: "snap"})
	a := spawn(t, spawnOpts{dir: dir})
	a.must(204, "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tapA"}`)
	a.must(204, "PUT", "/vsock", `{"guest_cid":3,"uds_path":"v.sock"}`)
	a.must(204, "PUT", "/mmds", `{"k":"v"}`)
	boot(t, a, kernel, 2)
	status, body := a.do("PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m"}`)
	if status != 400 || !strings.Contains(fault(t, body), "paused") {
		t.Errorf("snapshot of a running VM: %d %s", status, body)
	}
	a.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	a.must(204, "PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q,"snapshot_type":"Full"}`, state, mem))
	a.kill()
	fi, err := os.Stat(mem)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 64<<20 {
		t.Errorf("memory file is %d bytes, want 64 MiB", fi.Size())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 >= fi.Size() {
		t.Errorf("memory file is not sparse: %d blocks", st.Blocks)
	}

	bdir := testutil.ShortTempDir(t)
	b := spawn(t, spawnOpts{dir: bdir})
	b.must(204, "PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_backend":{"backend_type":"File","backend_path":%q},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tapB"}]}`, state, mem))
	if got := b.must(200, "GET", "/", ""); !strings.Contains(got, `"state":"Running"`) {
		t.Errorf("GET / after load = %s", got)
	}
	cfg := b.must(200, "GET", "/vm/config", "")
	for _, want := range []string{`"vcpu_count":2`, `"mem_size_mib":64`, `"host_dev_name":"tapB"`, `"guest_cid":3`, `"drive_id":"rootfs"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("GET /vm/config after load has no %s: %s", want, cfg)
		}
	}
	names := b.threadNames()
	if !slices.Contains(names, "fc_vcpu 0") || !slices.Contains(names, "fc_vcpu 1") {
		t.Errorf("threads after load: %q", names)
	}
	if got := b.must(200, "GET", "/mmds", ""); got != "{}" {
		t.Errorf("GET /mmds after load = %s, want the data store empty", got)
	}
	if status, body := b.do("PUT", "/actions", `{"action_type":"InstanceStart"}`); status != 400 {
		t.Errorf("InstanceStart after load: %d %s", status, body)
	}
	b.must(204, "PATCH", "/vm", `{"state":"Paused"}`)

	// Without resume_vm the loaded VM stays paused.
	c := spawn(t, spawnOpts{})
	c.must(204, "PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem))
	if got := c.must(200, "GET", "/", ""); !strings.Contains(got, `"state":"Paused"`) {
		t.Errorf("GET / after load without resume = %s", got)
	}
}

func TestSnapshotLoadFailure(t *testing.T) {
	testutil.CheckLeaks(t)
	dir := testutil.ShortTempDir(t)
	a := spawn(t, spawnOpts{dir: dir, settings: settingsFor("1.14.2", "")})
	boot(t, a, testutil.GuestKernel(t, guest.Options{Message: "snap"}), 1)
	a.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	a.must(204, "PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem))
	a.kill()

	tests := []struct {
		name     string
		version  string
		body     string
		wantExit bool
		want     string
	}{
		{"other version", "1.7.0", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem), true, "v1.14.2"},
		{"missing state file", "1.14.2", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state+".gone", mem), true, "No such file or directory"},
		{"missing memory file", "1.14.2", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem+".gone"), true, "No such file or directory"},
		{"unknown override", "1.14.2", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q,"network_overrides":[{"iface_id":"eth9","host_dev_name":"tap9"}]}`, state, mem), true, "eth9"},
		{"bad body", "1.14.2", fmt.Sprintf(`{"snapshot_path":%q}`, state), false, "mem_backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := spawn(t, spawnOpts{settings: settingsFor(tt.version, "")})
			status, body := p.do("PUT", "/snapshot/load", tt.body)
			if status != 400 || !strings.Contains(fault(t, body), tt.want) {
				t.Errorf("load: %d %s, want 400 with %q", status, body, tt.want)
			}
			if !tt.wantExit {
				p.stillRunning(20 * time.Millisecond)
				return
			}
			if code, _ := p.waitExit(5 * time.Second); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
		})
	}

	t.Run("after configuration", func(t *testing.T) {
		p := spawn(t, spawnOpts{})
		p.must(204, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`)
		status, body := p.do("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem))
		if status != 400 || !strings.Contains(fault(t, body), "not allowed after configuring") {
			t.Errorf("load after configuration: %d %s", status, body)
		}
		p.stillRunning(20 * time.Millisecond)
	})
}

func TestVsock(t *testing.T) {
	testutil.CheckLeaks(t)
	dir := testutil.ShortTempDir(t)
	a := spawn(t, spawnOpts{dir: dir, settings: settingsFor("1.16.1", "")})
	uds := filepath.Join(dir, "v.sock")
	a.must(204, "PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, uds))
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatalf("dial vsock socket: %v", err)
	}
	c.Write([]byte("CONNECT 1024\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err == nil {
		t.Errorf("CONNECT to a port nobody listens on answered %d bytes", n)
	}
	c.Close()
	taken := writeFile(t, dir, "taken.sock", "")
	status, body := a.do("PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, taken))
	if status != 400 || !strings.Contains(fault(t, body), "Address already in use") {
		t.Errorf("PUT /vsock on an existing path: %d %s", status, body)
	}
	a.must(204, "PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, uds))
	boot(t, a, testutil.GuestKernel(t, guest.Options{Message: "v"}), 1)
	a.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	a.must(204, "PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem))
	a.kill()

	// The old socket file is still there, so a restore needs the override.
	load := func(extra string) *proc {
		p := spawn(t, spawnOpts{settings: settingsFor("1.16.1", "")})
		status, body := p.do("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q%s}`, state, mem, extra))
		if extra == "" {
			if status != 400 {
				t.Errorf("load over a stale vsock socket: %d %s", status, body)
			}
			return p
		}
		if status != 204 {
			t.Fatalf("load with vsock_override: %d %s", status, body)
		}
		return p
	}
	p := load("")
	if code, _ := p.waitExit(5 * time.Second); code != 1 {
		t.Errorf("exit %d after a failed load, want 1", code)
	}
	uds2 := filepath.Join(dir, "v2.sock")
	load(fmt.Sprintf(`,"vsock_override":{"uds_path":%q}`, uds2))
	if fi, err := os.Stat(uds2); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("overridden vsock socket: %v", err)
	}
}
