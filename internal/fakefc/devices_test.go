package fakefc_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestDeviceFaults checks the answers to PUT and PATCH of devices named by
// ID, and to the other configuration requests, that refuse their body.
func TestDeviceFaults(t *testing.T) {
	type req struct{ method, path, body string }
	tests := []struct {
		name       string
		version    string
		setup      []req // each must answer 204; IMG is a backing file
		boot       bool  // start the VM after setup
		req        req
		wantStatus int
		wantFault  string
	}{
		{name: "put drive id mismatch", req: req{"PUT", "/drives/a", `{"drive_id":"b","path_on_host":"IMG","is_root_device":false}`},
			wantStatus: 400, wantFault: "The id from the path does not match the id from the body!"},
		{name: "put drive without backing", req: req{"PUT", "/drives/a", `{"drive_id":"a","is_root_device":false}`},
			wantStatus: 400, wantFault: "Drive config error: Unable to create the virtio block device: Invalid block config."},
		{name: "second root drive", setup: []req{{"PUT", "/drives/r", `{"drive_id":"r","path_on_host":"IMG","is_root_device":true}`}},
			req:        req{"PUT", "/drives/s", `{"drive_id":"s","path_on_host":"IMG","is_root_device":true}`},
			wantStatus: 400, wantFault: "Drive config error: A root block device already exists!"},
		{name: "root drive again", setup: []req{{"PUT", "/drives/r", `{"drive_id":"r","path_on_host":"IMG","is_root_device":true}`}},
			req:        req{"PUT", "/drives/r", `{"drive_id":"r","path_on_host":"IMG","is_root_device":true,"is_read_only":true}`},
			wantStatus: 204},
		{name: "put net id mismatch", req: req{"PUT", "/network-interfaces/e0", `{"iface_id":"e1","host_dev_name":"tap0"}`},
			wantStatus: 400, wantFault: "The id from the path does not match the id from the body!"},
		{name: "tap in use", setup: []req{{"PUT", "/network-interfaces/e0", `{"iface_id":"e0","host_dev_name":"tap0"}`}},
			req:        req{"PUT", "/network-interfaces/e1", `{"iface_id":"e1","host_dev_name":"tap0"}`},
			wantStatus: 400, wantFault: "Network interface error: The host device name tap0 is already in use."},
		{name: "same tap on the same interface", setup: []req{{"PUT", "/network-interfaces/e0", `{"iface_id":"e0","host_dev_name":"tap0"}`}},
			req:        req{"PUT", "/network-interfaces/e0", `{"iface_id":"e0","host_dev_name":"tap0"}`},
			wantStatus: 204},
		{name: "put pmem id mismatch", version: "1.14.2", req: req{"PUT", "/pmem/p", `{"id":"q","path_on_host":"IMG"}`},
			wantStatus: 400, wantFault: "The id from the path does not match the id from the body!"},
		{name: "patch machine config memory 0", req: req{"PATCH", "/machine-config", `{"mem_size_mib":0}`},
			wantStatus: 400, wantFault: "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."},
		{name: "patch drive id mismatch", boot: true, req: req{"PATCH", "/drives/rootfs", `{"drive_id":"x"}`},
			wantStatus: 400, wantFault: "The id from the path does not match the id from the body!"},
		{name: "patch unknown drive", boot: true, req: req{"PATCH", "/drives/zz", `{"drive_id":"zz"}`},
			wantStatus: 400, wantFault: `Drive update error: Unable to patch the block device: Invalid block device ID "zz".`},
		{name: "patch drive", boot: true, req: req{"PATCH", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"IMG"}`},
			wantStatus: 204},
		{name: "patch unknown net", boot: true, req: req{"PATCH", "/network-interfaces/e9", `{"iface_id":"e9"}`},
			wantStatus: 400, wantFault: "Network interface update error: Device not found: e9"},
		{name: "patch unknown pmem", version: "1.16.1", boot: true, req: req{"PATCH", "/pmem/z", `{"id":"z"}`},
			wantStatus: 400, wantFault: "Pmem update error: device not found: z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			version := tt.version
			if version == "" {
				version = "1.14.2"
			}
			p := spawn(t, spawnOpts{settings: settingsFor(version, "")})
			img, err := json.Marshal(writeFile(t, p.dir, "backing.img", "data"))
			if err != nil {
				t.Fatal(err)
			}
			withImg := func(body string) string {
				return strings.ReplaceAll(body, `"IMG"`, string(img))
			}
			for _, r := range tt.setup {
				p.must(204, r.method, r.path, withImg(r.body))
			}
			if tt.boot {
				boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "devices", Mode: guest.Halt}), 1)
			}
			status, body := p.do(tt.req.method, tt.req.path, withImg(tt.req.body))
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, body)
			}
			if tt.wantFault != "" {
				if got := fault(t, body); got != tt.wantFault {
					t.Fatalf("fault %q, want %q", got, tt.wantFault)
				}
			}
		})
	}
}

// TestDriveOrder checks that the root drive is listed first and that a
// drive PUT again keeps its place.
func TestDriveOrder(t *testing.T) {
	testutil.CheckLeaks(t)
	p := spawn(t, spawnOpts{settings: settingsFor("1.14.2", "")})
	img := writeFile(t, p.dir, "backing.img", "data")
	put := func(id string, root bool) {
		t.Helper()
		p.must(204, "PUT", "/drives/"+id, fmt.Sprintf(`{"drive_id":%q,"path_on_host":%q,"is_root_device":%v}`, id, img, root))
	}
	put("a", false)
	put("b", false)
	put("r", true)
	put("a", false)
	put("r", true)
	var cfg struct {
		Drives []struct {
			ID string `json:"drive_id"`
		} `json:"drives"`
	}
	if err := json.Unmarshal([]byte(p.must(200, "GET", "/vm/config", "")), &cfg); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range cfg.Drives {
		got = append(got, d.ID)
	}
	if want := []string{"r", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("drives %q, want %q", got, want)
	}
}
