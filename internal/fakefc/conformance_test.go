package fakefc_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// realVersion returns the release of the Firecracker binary bin.
func realVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	m := regexp.MustCompile(`Firecracker v(\d+\.\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s --version printed %q", bin, out)
	}
	return string(m[1])
}

// column strips the " at line L column C" position from a fault message:
// the fake reports positions close to, not always equal to, serde's.
var column = regexp.MustCompile(` at line \d+ column \d+`)

// TestMatchesRealFirecracker sends the same requests to a real Firecracker
// ($KINDLING_FIRECRACKER) and to the fake emulating its release, and checks
// that both answer with the same status and, for refused bodies, the same
// deserialisation message.
func TestMatchesRealFirecracker(t *testing.T) {
	bin := testutil.Firecracker(t)
	testutil.CheckLeaks(t)
	version := realVersion(t, bin)
	dirs := map[string]string{"real": testutil.ShortTempDir(t), "fake": testutil.ShortTempDir(t)}
	// Logs go to a file so that stdout is the pure serial console.
	logArgs := func(name string) []string {
		return []string{"--log-path", writeFile(t, dirs[name], "fc.log", "")}
	}
	procs := map[string]*proc{
		"real": spawn(t, spawnOpts{bin: bin, dir: dirs["real"], args: logArgs("real")}),
		"fake": spawn(t, spawnOpts{settings: settingsFor(version, ""), dir: dirs["fake"], args: logArgs("fake")}),
	}
	// Tap names must differ between the two and from other tests; the real
	// one creates the tap (as root) and it goes away when the process ends.
	taps := map[string]string{"real": fmt.Sprintf("kdr%d", os.Getpid()%100000), "fake": fmt.Sprintf("kdf%d", os.Getpid()%100000)}
	kernel := testutil.GuestKernel(t, guest.Options{Message: "conformance guest"})
	for _, d := range dirs {
		writeFile(t, d, "rootfs.img", strings.Repeat("\x00", 4096))
		writeFile(t, d, "data.img", strings.Repeat("\x00", 4096))
	}
	// Paths inside each process's directory are written as {dir}.
	steps := []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/version", ""},
		{"GET", "/machine-config", ""},
		{"GET", "/nope", ""},
		{"GET", "/boot-source", ""},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"bogus":1}`},
		{"PUT", "/machine-config", `{"vcpu_count":2}`},
		{"PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":64}`},
		{"PUT", "/actions", ""},
		{"PATCH", "/machine-config", ""},
		{"PUT", "/mmds", "notjson"},
		{"PUT", "/machine-config", `{"vcpu_count" 1}`},
		{"PUT", "/machine-config", `{"vcpu_count":1 "mem_size_mib":64}`},
		{"PUT", "/machine-config", `{1:2}`},
		{"PUT", "/machine-config", `{"vcpu_count":1,}`},
		{"PUT", "/machine-config", `{"vcpu_count":x}`},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}}`},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64`},
		{"PUT", "/machine-config", `[1,2]`},
		{"PUT", "/machine-config", `"str"`},
		{"PUT", "/mmds/config", `{"network_interfaces":"eth0"}`},
		{"PUT", "/mmds", `[1 2]`},
		{"PUT", "/drives/x", `{"drive_id":"x","is_root_device":false}`},
		{"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":64}`},
		{"PUT", "/machine-config", `{"vcpu_count":3,"mem_size_mib":64,"smt":true}`},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":0}`},
		{"PUT", "/machine-config", `{"vcpu_count":256,"mem_size_mib":64}`},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"zz"}`},
		{"GET", "/mmds", ""},
		{"PATCH", "/mmds", `{"a":1}`},
		{"PUT", "/balloon", `{"amount_mib":100000,"deflate_on_oom":true}`},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1000}`},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"ht_enabled":false}`},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"huge_pages":"None"}`},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":64,"smt":false}`},
		{"PATCH", "/machine-config", `{"mem_size_mib":64}`},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`},
		{"PUT", "/actions", `{"action_type":"Bogus"}`},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`},
		{"PUT", "/boot-source", `{"kernel_image_path":"{dir}/missing"}`},
		{"PUT", "/boot-source", `{"kernel_image_path":"{kernel}","boot_args":"console=ttyS0","extra":1}`},
		{"PUT", "/boot-source", `{"kernel_image_path":"{kernel}","boot_args":"console=ttyS0"}`},
		{"PUT", "/drives/rootfs", `{"drive_id":"other","path_on_host":"{dir}/rootfs.img","is_root_device":true,"is_read_only":false}`},
		{"PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"{dir}/missing.img","is_root_device":true,"is_read_only":false}`},
		{"PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"{dir}/rootfs.img","is_root_device":true,"is_read_only":false}`},
		{"PUT", "/drives/data", `{"drive_id":"data","path_on_host":"{dir}/data.img","is_root_device":false,"is_read_only":true,"cache_type":"Writeback"}`},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"{dir}/v.sock"}`},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"{dir}/v.sock","vsock_id":"vs"}`},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth1","host_dev_name":"{tap}"}`},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"06:00:ac:10:00:02","mtu":1500}`},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"06:00:ac:10:00:02","allow_mmds_requests":true}`},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"06:00:ac:10:00:02"}`},
		{"PUT", "/mmds/config", `{"network_interfaces":["eth9"]}`},
		{"PUT", "/mmds/config", `{"network_interfaces":[]}`},
		{"PUT", "/mmds/config", `{"version":"V2","network_interfaces":["eth0"]}`},
		{"PUT", "/logger", `{"log_path":"{dir}/missing/log"}`},
		{"PUT", "/logger", `{"level":"Info","show_level":true,"show_log_origin":false}`},
		{"PUT", "/metrics", `{"metrics_path":"{dir}/missing/metrics"}`},
		{"PUT", "/entropy", `{}`},
		{"PUT", "/cpu-config", `{}`},
		{"PUT", "/serial", `{}`},
		{"GET", "/hotplug/memory", ""},
		{"GET", "/vm/config", ""},
		{"GET", "/balloon", ""},
		{"PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1}`},
		{"GET", "/balloon", ""},
		{"PUT", "/mmds", `{"latest":{"meta-data":{"id":"a"}}}`},
		{"PATCH", "/mmds", `{"latest":{"meta-data":{"zone":"b"}}}`},
		{"GET", "/mmds", ""},
		{"PATCH", "/vm", `{"state":"Paused"}`},
		{"PATCH", "/drives/data", `{"drive_id":"data","path_on_host":"{dir}/data.img"}`},
		{"PUT", "/snapshot/create", `{"snapshot_path":"{dir}/s","mem_file_path":"{dir}/m"}`},
		{"PUT", "/snapshot/load", `{"snapshot_path":"{dir}/s"}`},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`},
		{"GET", "/", ""},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`},
		{"PUT", "/boot-source", `{"kernel_image_path":"{kernel}"}`},
		{"PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true}`},
		{"PATCH", "/drives/data", `{"drive_id":"data","path_on_host":"{dir}/data.img"}`},
		{"PATCH", "/balloon", `{"amount_mib":1}`},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`},
		{"PUT", "/mmds/config", `{"network_interfaces":["eth0"]}`},
		{"PUT", "/metrics", `{"metrics_path":"{dir}/m.json"}`},
		{"PUT", "/logger", `{"level":"Info"}`},
		{"PUT", "/network-interfaces/eth1", `{"iface_id":"eth1","host_dev_name":"{tap}x"}`},
		{"PATCH", "/network-interfaces/eth0", `{"iface_id":"eth0","rx_rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}}}`},
		{"PATCH", "/network-interfaces/eth9", `{"iface_id":"eth9"}`},
		{"PATCH", "/drives/nope", `{"drive_id":"nope","path_on_host":"{dir}/data.img"}`},
		{"PUT", "/vsock", `{"guest_cid":4,"uds_path":"{dir}/v2.sock"}`},
		{"PUT", "/entropy", `{}`},
		{"PATCH", "/balloon/statistics", `{"stats_polling_interval_s":2}`},
		{"PATCH", "/balloon/statistics", `{"stats_polling_interval_s":0}`},
		{"GET", "/hotplug/memory", ""},
		{"PATCH", "/hotplug/memory", `{"requested_size_mib":0}`},
		{"GET", "/vm/config", ""},
		{"GET", "/machine-config", ""},
		{"PUT", "/mmds", `{"b":2}`},
		{"GET", "/balloon/statistics", ""},
		{"PATCH", "/vm", `{"state":"Paused"}`},
		{"GET", "/", ""},
		{"PUT", "/snapshot/create", `{"snapshot_path":"{dir}/s","mem_file_path":"{dir}/m","snapshot_type":"Diff"}`},
		{"PUT", "/snapshot/create", `{"snapshot_path":"{dir}/s","mem_file_path":"{dir}/m"}`},
		{"PATCH", "/vm", `{"state":"Resumed"}`},
		{"GET", "/", ""},
		{"PATCH", "/vm", `{"state":"Bogus"}`},
	}
	realV, err := fakefc.ParseVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range steps {
		// Firecracker before v1.14 panics (SIGABRT) on this request when the
		// guest never activated the balloon; the fake does not copy that.
		if s.method == "PATCH" && s.path == "/balloon/statistics" && !realV.AtLeast(fakefc.Version{Major: 1, Minor: 14}) {
			continue
		}
		var status [2]int
		var body [2]string
		for j, name := range []string{"real", "fake"} {
			b := strings.NewReplacer("{dir}", dirs[name], "{kernel}", kernel, "{tap}", taps[name]).Replace(s.body)
			status[j], body[j] = procs[name].do(s.method, s.path, b)
		}
		what := fmt.Sprintf("step %d: %s %s %s", i, s.method, s.path, s.body)
		if status[0] != status[1] {
			t.Errorf("%s: real %d %s, fake %d %s", what, status[0], body[0], status[1], body[1])
			continue
		}
		if status[0] == 200 {
			// GET answers must have the same shape and values once each
			// process's own paths are written alike.
			var v [2]any
			for j, name := range []string{"real", "fake"} {
				norm := strings.NewReplacer(dirs[name], "{dir}", taps[name], "{tap}").Replace(body[j])
				if err := json.Unmarshal([]byte(norm), &v[j]); err != nil {
					t.Fatalf("%s: %s answer %q: %v", what, name, body[j], err)
				}
			}
			if !reflect.DeepEqual(v[0], v[1]) {
				t.Errorf("%s:\nreal %s\nfake %s", what, body[0], body[1])
			}
		}
		if status[0] == 400 && strings.Contains(body[0], "deserializing") {
			if r, f := column.ReplaceAllString(body[0], ""), column.ReplaceAllString(body[1], ""); r != f {
				t.Errorf("%s:\nreal %s\nfake %s", what, r, f)
			}
		}
	}
	for _, name := range []string{"real", "fake"} {
		procs[name].waitOutput("conformance guest\n")
		if procs[name].exited() {
			t.Errorf("%s exited: %v", name, procs[name].state)
		}
	}
	// Both leave their socket file behind when killed.
	for name, d := range dirs {
		procs[name].kill()
		if _, err := exec.Command("test", "-S", filepath.Join(d, "api.sock")).Output(); err != nil {
			t.Errorf("%s: API socket gone after exit", name)
		}
	}
}

// TestMatchesRealFirecrackerLifecycle checks process-level behaviour
// against a real Firecracker: exit statuses, snapshot round trips and
// signals.
func TestMatchesRealFirecrackerLifecycle(t *testing.T) {
	bin := testutil.Firecracker(t)
	testutil.CheckLeaks(t)
	version := realVersion(t, bin)
	impls := []struct {
		name string
		opts func(dir string) spawnOpts
	}{
		{"real", func(dir string) spawnOpts { return spawnOpts{bin: bin, dir: dir} }},
		{"fake", func(dir string) spawnOpts { return spawnOpts{settings: settingsFor(version, ""), dir: dir} }},
	}
	withLog := func(t *testing.T, o spawnOpts) spawnOpts {
		o.args = append(o.args, "--log-path", writeFile(t, o.dir, "fc.log", ""))
		return o
	}
	for _, impl := range impls {
		t.Run(impl.name+"/power-off", func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			p := spawn(t, withLog(t, impl.opts(dir)))
			boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "bye", Mode: guest.PowerOff}), 1)
			if code, sig := p.waitExit(10 * time.Second); code != 0 || sig != 0 {
				t.Errorf("exit %d signal %v, want 0", code, sig)
			}
			if p.stdout.String() != "bye\n" {
				t.Errorf("console %q, want %q", p.stdout, "bye\n")
			}
		})
		t.Run(impl.name+"/SIGTERM", func(t *testing.T) {
			p := spawn(t, withLog(t, impl.opts(testutil.ShortTempDir(t))))
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code, sig := p.waitExit(10 * time.Second); sig != syscall.SIGTERM {
				t.Errorf("exit %d signal %v, want killed by SIGTERM", code, sig)
			}
		})
		t.Run(impl.name+"/snapshot", func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			a := spawn(t, withLog(t, impl.opts(dir)))
			boot(t, a, testutil.GuestKernel(t, guest.Options{Message: "snap"}), 2)
			a.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
			state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
			a.must(204, "PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, state, mem))
			a.kill()
			b := spawn(t, withLog(t, impl.opts(testutil.ShortTempDir(t))))
			b.must(204, "PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_backend":{"backend_type":"File","backend_path":%q},"resume_vm":true}`, state, mem))
			if got := b.must(200, "GET", "/", ""); !strings.Contains(got, `"state":"Running"`) {
				t.Errorf("GET / after load = %s", got)
			}
			names := b.threadNames()
			if !slices.Contains(names, "fc_vcpu 0") || !slices.Contains(names, "fc_vcpu 1") {
				t.Errorf("threads after load: %q", names)
			}
			b.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
			b.must(204, "PATCH", "/vm", `{"state":"Resumed"}`)
		})
		t.Run(impl.name+"/socket exists", func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			writeFile(t, dir, "api.sock", "")
			o := withLog(t, impl.opts(dir))
			o.noWait = true
			p := spawn(t, o)
			if code, _ := p.waitExit(10 * time.Second); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
		})
		t.Run(impl.name+"/unknown flag", func(t *testing.T) {
			o := impl.opts(testutil.ShortTempDir(t))
			o.args, o.noWait = []string{"--bogus"}, true
			p := spawn(t, o)
			if code, _ := p.waitExit(10 * time.Second); code != 153 {
				t.Errorf("exit %d, want 153", code)
			}
		})
		t.Run(impl.name+"/failed load", func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			p := spawn(t, withLog(t, impl.opts(dir)))
			status, body := p.do("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, filepath.Join(dir, "none"), filepath.Join(dir, "none.mem")))
			if status != 400 {
				t.Errorf("load: %d %s", status, body)
			}
			if code, _ := p.waitExit(10 * time.Second); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
		})
	}
}
