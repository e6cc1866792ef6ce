package fcapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"reflect"
	"testing"
)

func TestRequestShaping(t *testing.T) {
	tests := []struct {
		name    string
		version string
		call    func(context.Context, *Client) error
		// wantPath/wantBody describe the one request expected on the wire
		// (besides the version probe); wantPath "" means nothing was sent.
		wantPath string
		wantBody string
		// wantErr is the NotSupportedError expected (nil for success).
		wantErr *NotSupportedError
	}{
		{
			name: "huge pages refused before 1.7", version: "1.5.1",
			call: func(ctx context.Context, c *Client) error {
				return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 128, HugePages: HugePages2M})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureHugePages), Field: "MachineConfiguration.huge_pages", Have: v(1, 5, 1), Need: v(1, 7, 0)},
		},
		{
			name: "huge pages sent from 1.7", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 128, HugePages: HugePages2M})
			},
			wantPath: "PUT /machine-config",
			wantBody: `{"huge_pages":"2M","mem_size_mib":128,"vcpu_count":1}`,
		},
		{
			name: "unset huge pages not sent to 1.5", version: "1.5.1",
			call: func(ctx context.Context, c *Client) error {
				return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 2, MemSizeMiB: 256, SMT: true})
			},
			wantPath: "PUT /machine-config",
			wantBody: `{"mem_size_mib":256,"smt":true,"vcpu_count":2}`,
		},
		{
			name: "cpu template enum value refused", version: "1.1.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PatchMachineConfig(ctx, MachineConfigPatch{CPUTemplate: CPUTemplateT2A})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureCPUTemplateT2A), Field: "MachineConfiguration.cpu_template=T2A", Have: v(1, 1, 0), Need: v(1, 3, 0)},
		},
		{
			name: "memory hotplug endpoint refused on 1.7", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PutMemoryHotplug(ctx, MemoryHotplugConfig{TotalSizeMiB: 1024})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureMemoryHotplug), Field: "PUT /hotplug/memory", Have: v(1, 7, 0), Need: v(1, 14, 0)},
		},
		{
			name: "memory hotplug status refused on 1.7", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.GetMemoryHotplug(ctx)
				return err
			},
			wantErr: &NotSupportedError{Feature: string(FeatureMemoryHotplug), Field: "GET /hotplug/memory", Have: v(1, 7, 0), Need: v(1, 14, 0)},
		},
		{
			name: "memory hotplug sent on 1.14", version: "1.14.2",
			call: func(ctx context.Context, c *Client) error {
				return c.PatchMemoryHotplug(ctx, MemoryHotplugSizeUpdate{RequestedSizeMiB: 0})
			},
			wantPath: "PATCH /hotplug/memory",
			wantBody: `{"requested_size_mib":0}`,
		},
		{
			name: "entropy refused on 1.3", version: "1.3.1",
			call: func(ctx context.Context, c *Client) error {
				return c.PutEntropy(ctx, EntropyDevice{})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureEntropy), Field: "PUT /entropy", Have: v(1, 3, 1), Need: v(1, 4, 0)},
		},
		{
			name: "serial refused on 1.7", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PutSerial(ctx, SerialDevice{SerialOutPath: "/tmp/x"})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureSerial), Field: "PUT /serial", Have: v(1, 7, 0), Need: v(1, 14, 0)},
		},
		{
			name: "mtu refused before 1.16", version: "1.14.2",
			call: func(ctx context.Context, c *Client) error {
				return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", MTU: 9000})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureNetworkMTU), Field: "NetworkInterface.mtu", Have: v(1, 14, 2), Need: v(1, 16, 0)},
		},
		{
			name: "logger trace refused on 1.4", version: "1.4.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PutLogger(ctx, Logger{LogPath: "/tmp/l", Level: LogTrace})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureLoggerTrace), Field: "Logger.level=Trace", Have: v(1, 4, 0), Need: v(1, 5, 0)},
		},
		{
			name: "drive id escaped", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PutDrive(ctx, Drive{DriveID: "a/b c", PathOnHost: "/d", IsRootDevice: true})
			},
			wantPath: "PUT /drives/a%2Fb%20c",
			wantBody: `{"drive_id":"a/b c","is_read_only":false,"is_root_device":true,"path_on_host":"/d"}`,
		},
		{
			name: "vhost-user drive refused on 1.5", version: "1.5.1",
			call: func(ctx context.Context, c *Client) error {
				return c.PutDrive(ctx, Drive{DriveID: "v", Socket: "/s", IsRootDevice: false})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureVhostUserBlock), Field: "Drive.socket", Have: v(1, 5, 1), Need: v(1, 6, 0)},
		},
		{
			name: "snapshot create version kept on 1.5", version: "1.5.1",
			call: func(ctx context.Context, c *Client) error {
				return c.CreateSnapshot(ctx, SnapshotCreate{SnapshotPath: "/s", MemFilePath: "/m", Version: "1.0.0"})
			},
			wantPath: "PUT /snapshot/create",
			wantBody: `{"mem_file_path":"/m","snapshot_path":"/s","version":"1.0.0"}`,
		},
		{
			name: "snapshot create version refused from 1.6", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.CreateSnapshot(ctx, SnapshotCreate{SnapshotPath: "/s", MemFilePath: "/m", Version: "1.0.0"})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureSnapshotVersion), Field: "SnapshotCreateParams.version", Have: v(1, 7, 0), Need: v(1, 0, 0), Removed: v(1, 6, 0)},
		},
		{
			name: "snapshot load as mem_file_path on 1.0", version: "1.0.2",
			call: func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"}, TrackDirtyPages: true, ResumeVM: true})
			},
			wantPath: "PUT /snapshot/load",
			wantBody: `{"enable_diff_snapshots":true,"mem_file_path":"/m","resume_vm":true,"snapshot_path":"/s"}`,
		},
		{
			name: "snapshot load uffd refused on 1.0", version: "1.0.2",
			call: func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendUffd, BackendPath: "/u"}})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureUffd), Field: "SnapshotLoadParams.mem_backend", Have: v(1, 0, 2), Need: v(1, 1, 0)},
		},
		{
			name: "snapshot load mem_backend and enable_diff_snapshots on 1.7", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"}, TrackDirtyPages: true})
			},
			wantPath: "PUT /snapshot/load",
			wantBody: `{"enable_diff_snapshots":true,"mem_backend":{"backend_type":"File","backend_path":"/m"},"snapshot_path":"/s"}`,
		},
		{
			name: "snapshot load track_dirty_pages on 1.14", version: "1.14.2",
			call: func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"}, TrackDirtyPages: true,
					NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "tap1"}}})
			},
			wantPath: "PUT /snapshot/load",
			wantBody: `{"mem_backend":{"backend_type":"File","backend_path":"/m"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],"snapshot_path":"/s","track_dirty_pages":true}`,
		},
		{
			name: "network overrides refused on 1.7", version: "1.7.0",
			call: func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"},
					NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "tap1"}}})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureNetworkOverrides), Field: "SnapshotLoadParams.network_overrides", Have: v(1, 7, 0), Need: v(1, 12, 0)},
		},
		{
			name: "vsock override refused on 1.14", version: "1.14.2",
			call: func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"},
					VsockOverride: &VsockOverride{UDSPath: "/v"}})
			},
			wantErr: &NotSupportedError{Feature: string(FeatureVsockOverride), Field: "SnapshotLoadParams.vsock_override", Have: v(1, 14, 2), Need: v(1, 16, 0)},
		},
		{
			name: "imds_compat spelled imds_comat on 1.13.0", version: "1.13.0",
			call: func(ctx context.Context, c *Client) error {
				return c.PutMMDSConfig(ctx, MMDSConfig{NetworkInterfaces: []string{"eth0"}, IMDSCompat: true})
			},
			wantPath: "PUT /mmds/config",
			wantBody: `{"imds_comat":true,"network_interfaces":["eth0"]}`,
		},
		{
			name: "imds_compat on 1.14", version: "1.14.2",
			call: func(ctx context.Context, c *Client) error {
				return c.PutMMDSConfig(ctx, MMDSConfig{NetworkInterfaces: []string{"eth0"}, IMDSCompat: true})
			},
			wantPath: "PUT /mmds/config",
			wantBody: `{"imds_compat":true,"network_interfaces":["eth0"]}`,
		},
		{
			name: "pause", version: "1.7.0",
			call:     func(ctx context.Context, c *Client) error { return c.Pause(ctx) },
			wantPath: "PATCH /vm",
			wantBody: `{"state":"Paused"}`,
		},
		{
			name: "instance start", version: "1.7.0",
			call:     func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) },
			wantPath: "PUT /actions",
			wantBody: `{"action_type":"InstanceStart"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, tt.version, nil)
			c := srv.client(t)
			err := tt.call(t.Context(), c)
			reqs := srv.requests()
			if tt.wantErr != nil {
				var nse *NotSupportedError
				if !errors.As(err, &nse) || !errors.Is(err, ErrNotSupported) {
					t.Fatalf("error = %v, want a *NotSupportedError", err)
				}
				if *nse != *tt.wantErr {
					t.Errorf("error = %+v, want %+v", *nse, *tt.wantErr)
				}
				if len(reqs) != 0 {
					t.Errorf("sent %v, want nothing sent", reqs)
				}
				return
			}
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if len(reqs) != 1 {
				t.Fatalf("sent %d requests (%v), want 1", len(reqs), reqs)
			}
			if got := reqs[0].Method + " " + reqs[0].Path; got != tt.wantPath {
				t.Errorf("sent %s, want %s", got, tt.wantPath)
			}
			if !jsonEqual(t, reqs[0].Body, tt.wantBody) {
				t.Errorf("body = %s, want %s", reqs[0].Body, tt.wantBody)
			}
			if reqs[0].Host != "localhost" {
				t.Errorf("host = %q, want localhost", reqs[0].Host)
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("body %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("want %q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// TestShapeFieldsZeroDropped checks the rule for a field the release does
// not know: dropped when zero, refused when set.
func TestShapeFieldsZeroDropped(t *testing.T) {
	tests := []struct {
		name    string
		fields  map[string]string
		want    map[string]string
		wantErr bool
	}{
		{"zero string dropped", map[string]string{"vcpu_count": "1", "huge_pages": `""`}, map[string]string{"vcpu_count": "1"}, false},
		{"null dropped", map[string]string{"huge_pages": "null"}, map[string]string{}, false},
		{"set refused", map[string]string{"huge_pages": `"None"`}, nil, true},
		{"known field kept", map[string]string{"smt": "false"}, map[string]string{"smt": "false"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := map[string]json.RawMessage{}
			for k, val := range tt.fields {
				fields[k] = json.RawMessage(val)
			}
			err := shapeFields(v(1, 5, 0), "MachineConfiguration", fields)
			if tt.wantErr {
				if !errors.Is(err, ErrNotSupported) {
					t.Fatalf("err = %v, want ErrNotSupported", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k, val := range fields {
				got[k] = string(val)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("fields = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIsZeroJSON(t *testing.T) {
	tests := map[string]bool{
		"null": true, "false": true, "0": true, "0.0": true, "-0": true, `""`: true, "[]": true, "{}": true, "[ ]": true,
		"true": false, "1": false, `"0"`: false, "[0]": false, `{"a":1}`: false, "10": false,
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := isZeroJSON(json.RawMessage(in)); got != want {
				t.Errorf("isZeroJSON(%s) = %v, want %v", in, got, want)
			}
		})
	}
}

func TestNotSupportedErrorMessage(t *testing.T) {
	tests := []struct {
		err  *NotSupportedError
		want string
	}{
		{&NotSupportedError{Feature: "memory hotplug", Have: v(1, 7, 0), Need: v(1, 14, 0)},
			"memory hotplug is not supported by Firecracker 1.7.0 (needs ≥ 1.14.0)"},
		{&NotSupportedError{Feature: "memory hotplug", Field: "PUT /hotplug/memory", Have: v(1, 7, 0), Need: v(1, 14, 0)},
			"memory hotplug (PUT /hotplug/memory) is not supported by Firecracker 1.7.0 (needs ≥ 1.14.0)"},
		{&NotSupportedError{Feature: "snapshot version", Have: v(1, 7, 0), Need: v(1, 0, 0), Removed: v(1, 6, 0)},
			"snapshot version is not supported by Firecracker 1.7.0 (removed in 1.6.0)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSendsNothingForRefusedEndpoint(t *testing.T) {
	srv := newTestServer(t, "1.7.0", nil)
	c := srv.client(t)
	if err := c.PutPmem(t.Context(), Pmem{ID: "p0", PathOnHost: "/p"}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("PutPmem = %v, want ErrNotSupported", err)
	}
	if n := srv.count(http.MethodPut, "/pmem/p0"); n != 0 {
		t.Errorf("PUT /pmem/p0 sent %d times, want 0", n)
	}
}

func TestEmptyIDRefused(t *testing.T) {
	tests := map[string]func(context.Context, *Client) error{
		"drive":       func(ctx context.Context, c *Client) error { return c.PutDrive(ctx, Drive{PathOnHost: "/x"}) },
		"patch drive": func(ctx context.Context, c *Client) error { return c.PatchDrive(ctx, PartialDrive{PathOnHost: "/x"}) },
		"network": func(ctx context.Context, c *Client) error {
			return c.PutNetworkInterface(ctx, NetworkInterface{HostDevName: "tap0"})
		},
		"pmem": func(ctx context.Context, c *Client) error { return c.PutPmem(ctx, Pmem{PathOnHost: "/p"}) },
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newTestServer(t, "1.14.2", nil)
			c := srv.client(t)
			if err := call(t.Context(), c); !errors.Is(err, ErrEmptyID) {
				t.Fatalf("error = %v, want ErrEmptyID", err)
			}
			if reqs := srv.requests(); len(reqs) != 0 {
				t.Errorf("sent %v", reqs)
			}
		})
	}
}
