package fcapi

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{in: "v1.14.2", want: v(1, 14, 2)},
		{in: "1.7.0", want: v(1, 7, 0)},
		{in: " 0.25.0\n", want: v(0, 25, 0)},
		{in: "1.17.0-dev", want: Version{Major: 1, Minor: 17, Pre: "dev"}},
		{in: "", wantErr: true},
		{in: "v", wantErr: true},
		{in: "1.2", wantErr: true},
		{in: "1.2.3.4", wantErr: true},
		{in: "1.-2.3", wantErr: true},
		{in: "1.2.x", wantErr: true},
		{in: "1.2.3-", wantErr: true},
		{in: "+1.2.3", wantErr: true},
		{in: "1.2.99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseVersion(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseVersion(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseVersion(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b          string
		less, atLeast bool
		stringOfA     string
	}{
		{"1.7.0", "1.14.0", true, false, "1.7.0"},
		{"1.14.0", "1.7.0", false, true, "1.14.0"},
		{"1.14.2", "1.14.2", false, true, "1.14.2"},
		{"1.14.2", "1.14.10", true, false, "1.14.2"},
		{"0.25.0", "1.0.0", true, false, "0.25.0"},
		{"2.0.0", "1.99.99", false, true, "2.0.0"},
		{"1.17.0-dev", "1.17.0", false, true, "1.17.0-dev"},
	}
	for _, tt := range tests {
		t.Run(tt.a+"_vs_"+tt.b, func(t *testing.T) {
			a, b := MustParseVersion(tt.a), MustParseVersion(tt.b)
			if got := a.Less(b); got != tt.less {
				t.Errorf("Less = %v, want %v", got, tt.less)
			}
			if got := a.AtLeast(b); got != tt.atLeast {
				t.Errorf("AtLeast = %v, want %v", got, tt.atLeast)
			}
			if got := a.String(); got != tt.stringOfA {
				t.Errorf("String = %q, want %q", got, tt.stringOfA)
			}
		})
	}
}

func TestCapabilities(t *testing.T) {
	tests := []struct {
		version string
		has     []Feature
		lacks   []Feature
	}{
		{"1.0.2", []Feature{FeatureDiffSnapshots, FeatureSnapshotVersion}, []Feature{FeatureMemBackend, FeatureEntropy, FeatureHugePages}},
		{"1.4.0", []Feature{FeatureEntropy, FeatureCPUConfig, FeatureMemBackend}, []Feature{FeatureLoggerTrace, FeatureHugePages}},
		{"1.7.0", []Feature{FeatureHugePages, FeatureVhostUserBlock}, []Feature{FeatureSnapshotVersion, FeatureNetworkOverrides, FeatureMemoryHotplug, FeatureSerial}},
		{"1.12.0", []Feature{FeatureNetworkOverrides}, []Feature{FeatureTrackDirtyOnLoad, FeatureVsockOverride}},
		{"1.14.2", []Feature{FeatureMemoryHotplug, FeatureSerial, FeaturePmem, FeatureTrackDirtyOnLoad}, []Feature{FeatureClockRealtime, FeatureVsockOverride, FeatureNetworkMTU}},
		{"1.16.1", []Feature{FeatureVsockOverride, FeatureNetworkMTU, FeatureClockRealtime, FeaturePmemPatch}, []Feature{FeatureSnapshotVersion}},
		{"0.25.0", nil, []Feature{FeatureDiffSnapshots, FeatureEntropy}},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			caps := CapabilitiesOf(MustParseVersion(tt.version))
			list := caps.List()
			for _, f := range tt.has {
				if !caps.Supports(f) || caps.Check(f) != nil || !slices.Contains(list, f) {
					t.Errorf("%s: want %q supported", tt.version, f)
				}
			}
			for _, f := range tt.lacks {
				if caps.Supports(f) || slices.Contains(list, f) {
					t.Errorf("%s: want %q unsupported", tt.version, f)
				}
				if err := caps.Check(f); !errors.Is(err, ErrNotSupported) {
					t.Errorf("%s: Check(%q) = %v, want ErrNotSupported", tt.version, f, err)
				}
			}
		})
	}
	if CapabilitiesOf(v(9, 0, 0)).Supports("no such feature") {
		t.Error("an unknown feature is reported supported")
	}
}

func TestClientSupports(t *testing.T) {
	srv := newTestServer(t, "1.7.0", nil)
	c := srv.client(t)
	for f, want := range map[Feature]bool{FeatureHugePages: true, FeatureMemoryHotplug: false} {
		got, err := c.Supports(t.Context(), f)
		if err != nil || got != want {
			t.Errorf("Supports(%q) = %v, %v; want %v", f, got, err, want)
		}
	}
}

func TestFeatureTableConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, row := range featureTable {
		if row.since.IsZero() {
			t.Errorf("%q has no first release", row.feature)
		}
		if !row.removed.IsZero() && !row.since.Less(row.removed) {
			t.Errorf("%q removed (%v) before it appeared (%v)", row.feature, row.removed, row.since)
		}
		for _, k := range row.keys {
			if seen[k] {
				t.Errorf("key %q listed twice", k)
			}
			seen[k] = true
		}
	}
	if got := len(Features()); got != len(featureTable) {
		t.Errorf("Features() has %d entries, table %d", got, len(featureTable))
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"v1.14.2", "1.7.0", "0.25.0", "1.17.0-dev", "", "1..2", "v-1.2.3", "1.2.3-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ver, err := ParseVersion(s)
		if err != nil {
			return
		}
		again, err := ParseVersion(ver.String())
		if err != nil || again != ver {
			t.Fatalf("%q parsed as %v, which reparses as %v, %v", s, ver, again, err)
		}
		if ver.Less(ver) || !ver.AtLeast(ver) {
			t.Fatalf("%v is not equal to itself", ver)
		}
	})
}

func FuzzDecodeAPIError(f *testing.F) {
	for _, s := range []string{`{"fault_message":"bad"}`, `{"fault_message":1}`, "", "plain text", "\xff\xfe", `[1,2]`, `null`} {
		f.Add(400, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := decodeAPIError("PUT", "/drives/x", status, body)
		if e == nil || e.StatusCode != status {
			t.Fatalf("decodeAPIError lost the status: %+v", e)
		}
		_ = e.Error()
		if len(e.FaultMessage) > maxFaultBytes+len("…") && !json.Valid(body) {
			t.Fatalf("fault message of %d bytes from a non-JSON body", len(e.FaultMessage))
		}
	})
}

func FuzzDecodeResponses(f *testing.F) {
	seeds := []string{
		`{"app_name":"Firecracker","id":"x","state":"Running","vmm_version":"1.14.2"}`,
		`{"firecracker_version":"1.7.0"}`,
		`{"machine-config":{"vcpu_count":1,"mem_size_mib":128},"drives":[{"drive_id":"r","is_root_device":true}]}`,
		`{"machine_config":{"vcpu_count":1,"mem_size_mib":128},"block_devices":[]}`,
		`{"target_pages":1,"actual_pages":2,"target_mib":3,"actual_mib":4,"oom_kill":5}`,
		`{"total_size_mib":1024,"slot_size_mib":128,"block_size_mib":2,"plugged_size_mib":0,"requested_size_mib":0}`,
		``, `null`, `[]`, `{"drives":{}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{&InstanceInfo{}, &FirecrackerVersion{}, &FullVMConfig{}, &BalloonStats{}, &MemoryHotplugStatus{}, &MachineConfig{}, &Balloon{}, &BalloonHintingStatus{}}
		for _, out := range targets {
			_ = decodeBody(body, out)
		}
		var fv FirecrackerVersion
		if decodeBody(body, &fv) == nil {
			_, _ = ParseVersion(fv.FirecrackerVersion)
		}
	})
}

func TestDecodeFullVMConfig(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"current keys", `{"machine-config":{"vcpu_count":2,"mem_size_mib":256},"boot-source":{"kernel_image_path":"/k"},"drives":[{"drive_id":"rootfs","is_root_device":true,"is_read_only":false}],"network-interfaces":[{"iface_id":"eth0","host_dev_name":"tap0"}]}`},
		{"1.0 keys", `{"machine_config":{"vcpu_count":2,"mem_size_mib":256},"boot_source":{"kernel_image_path":"/k"},"block_devices":[{"drive_id":"rootfs","is_root_device":true,"is_read_only":false}],"net_devices":[{"iface_id":"eth0","host_dev_name":"tap0"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg FullVMConfig
			if err := decodeBody([]byte(tt.body), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.MachineConfig == nil || cfg.MachineConfig.VCPUCount != 2 || cfg.MachineConfig.MemSizeMiB != 256 {
				t.Errorf("machine config = %+v", cfg.MachineConfig)
			}
			if cfg.BootSource == nil || cfg.BootSource.KernelImagePath != "/k" {
				t.Errorf("boot source = %+v", cfg.BootSource)
			}
			if len(cfg.Drives) != 1 || cfg.Drives[0].DriveID != "rootfs" || !cfg.Drives[0].IsRootDevice {
				t.Errorf("drives = %+v", cfg.Drives)
			}
			if len(cfg.NetworkInterfaces) != 1 || cfg.NetworkInterfaces[0].HostDevName != "tap0" {
				t.Errorf("network interfaces = %+v", cfg.NetworkInterfaces)
			}
		})
	}
}
