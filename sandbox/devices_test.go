package sandbox

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/vmm"
)

// TestSpecDevices checks the device settings of a spec: what reaches the
// driver's configuration, and the one-line error of each bad value, the
// same whether the value came from a flag or a config file.
func TestSpecDevices(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		check   func(t *testing.T, cfg vmm.Config)
		wantErr string
	}{
		{
			name: "none",
			spec: Spec{Rootfs: &Disk{Path: "/r"}, Net: []Net{{Tap: "t0"}}},
			check: func(t *testing.T, cfg vmm.Config) {
				if cfg.Drives[0].RateLimiter != nil || cfg.NetworkInterfaces[0].RxRateLimiter != nil || cfg.Balloon != nil || cfg.Entropy != nil || cfg.CPUTemplate != "" || cfg.LogLevel != "" {
					t.Errorf("devices set without being asked for: %+v", cfg)
				}
			},
		},
		{
			name: "all",
			spec: Spec{
				Rootfs: &Disk{Path: "/r"}, Drives: []Disk{{Path: "/d"}}, Net: []Net{{Tap: "t0"}},
				CPUTemplate: "T2", VMMLogLevel: "DEBUG", DriveRate: "100MB,1000pps", NetRate: "100Mbit",
				Balloon: "64M", Entropy: true,
			},
			check: func(t *testing.T, cfg vmm.Config) {
				if cfg.CPUTemplate != "T2" || cfg.LogLevel != "Debug" {
					t.Errorf("cpu template %q, log level %q; want T2, Debug", cfg.CPUTemplate, cfg.LogLevel)
				}
				for _, d := range cfg.Drives {
					if d.RateLimiter == nil || d.RateLimiter.Bandwidth == nil || d.RateLimiter.Ops == nil {
						t.Fatalf("drive %s: rate limiter %+v, want bandwidth and ops", d.ID, d.RateLimiter)
					}
				}
				if cfg.Drives[0].RateLimiter == cfg.Drives[1].RateLimiter || cfg.Drives[0].RateLimiter.Bandwidth == cfg.Drives[1].RateLimiter.Bandwidth {
					t.Error("two drives share one rate limiter")
				}
				n := cfg.NetworkInterfaces[0]
				if n.RxRateLimiter == nil || n.TxRateLimiter == nil || n.RxRateLimiter.Bandwidth == nil || n.RxRateLimiter.Ops != nil {
					t.Errorf("interface limiters rx %+v tx %+v, want a bandwidth each way", n.RxRateLimiter, n.TxRateLimiter)
				}
				if cfg.Balloon == nil || cfg.Balloon.AmountMiB != 64 || !cfg.Balloon.DeflateOnOOM {
					t.Errorf("balloon %+v, want 64 MiB deflating on OOM", cfg.Balloon)
				}
				if cfg.Entropy == nil {
					t.Error("no entropy device")
				}
			},
		},
		{
			name: "empty balloon",
			spec: Spec{Balloon: "0"},
			check: func(t *testing.T, cfg vmm.Config) {
				if cfg.Balloon == nil || cfg.Balloon.AmountMiB != 0 {
					t.Errorf("balloon %+v, want one of 0 MiB", cfg.Balloon)
				}
			},
		},
		{name: "bad drive rate", spec: Spec{DriveRate: "5furlongs"}, wantErr: `drive_rate: rate "5furlongs": `},
		{name: "zero net rate", spec: Spec{NetRate: "0Mbit"}, wantErr: `net_rate: rate "0Mbit": `},
		{name: "bad balloon", spec: Spec{Balloon: "lots"}, wantErr: `balloon: memory "lots": `},
		{name: "bad log level", spec: Spec{VMMLogLevel: "loud"}, wantErr: `vmm_log_level "loud": unknown level (give one of error, warning, info, debug, trace, off)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.spec.devices()
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("devices() = %v, want one line starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg := vmmConfig(&record{ID: "x", Spec: tt.spec, Kernel: "/k", Taps: tapsOf(tt.spec)}, "/run/x")
			tt.check(t, cfg)
		})
	}
}

// tapsOf gives the record's taps for a spec's existing taps.
func tapsOf(s Spec) []tapRef {
	var taps []tapRef
	for _, n := range s.Net {
		taps = append(taps, tapRef{Name: n.Tap, MAC: "06:00:00:00:00:01"})
	}
	return taps
}

// TestSpecDevicesConfigFile checks that a config file's device keys give
// the same spec as the flags do, and that a bad one is refused with the
// same error at create.
func TestSpecDevicesConfigFile(t *testing.T) {
	s, err := parseSpec("test.toml", []byte(`
cpu_template = "T2S"
vmm_log_level = "trace"
drive_rate = "50MiB"
net_rate = "10kpps"
balloon = "32M"
entropy = true
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{CPUTemplate: "T2S", VMMLogLevel: "trace", DriveRate: "50MiB", NetRate: "10kpps", Balloon: "32M", Entropy: true}
	if s.CPUTemplate != want.CPUTemplate || s.VMMLogLevel != want.VMMLogLevel || s.DriveRate != want.DriveRate ||
		s.NetRate != want.NetRate || s.Balloon != want.Balloon || s.Entropy != want.Entropy {
		t.Errorf("parsed %+v, want %+v", s, want)
	}
	rt, fc := newRuntime(t, false)
	_, err = rt.Create(context.Background(), Spec{ID: "bad", Firecracker: fc, NetRate: "fast"}, CreateOptions{})
	if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), `net_rate: rate "fast"`) {
		t.Errorf("create with net_rate fast: %v, want an invalid spec naming net_rate", err)
	}
}

// TestResolveMetadata checks --metadata and the metadata key: inline JSON
// or a file, kept as JSON, and the one-line refusals.
func TestResolveMetadata(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/meta.json"
	if err := os.WriteFile(file, []byte(`{"latest": {"meta-data": {"id": "web"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := dir + "/bad.json"
	if err := os.WriteFile(bad, []byte(`["not", "an", "object"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	net := []Net{{Auto: true}}
	tests := []struct {
		name     string
		spec     Spec
		want     string // the metadata kept
		wantErr  string // the start of the error
		wantMMDS bool
	}{
		{name: "none", spec: Spec{}, want: ""},
		{name: "inline", spec: Spec{Net: net, Metadata: ` {"a": 1} `}, want: `{"a": 1}`, wantMMDS: true},
		{name: "file", spec: Spec{Net: net, Metadata: file}, want: `{"latest": {"meta-data": {"id": "web"}}}`, wantMMDS: true},
		{name: "no network", spec: Spec{Metadata: `{"a": 1}`}, wantErr: "metadata: the guest reads it through a network interface: add one (--net"},
		{name: "not JSON", spec: Spec{Net: net, Metadata: `{"a": `}, wantErr: "metadata: not JSON: "},
		{name: "not an object", spec: Spec{Net: net, Metadata: bad}, wantErr: "metadata file " + bad + ": not a JSON object"},
		{name: "no such file", spec: Spec{Net: net, Metadata: dir + "/nope.json"}, wantErr: "metadata file: open "},
		{name: "too large", spec: Spec{Net: net, Metadata: `{"a": "` + strings.Repeat("x", maxMetadata) + `"}`}, wantErr: "metadata: 51209 bytes, more than Firecracker's limit of 51200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			err := resolveMetadata(&s)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("resolveMetadata = %v, want one line starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || s.Metadata != tt.want {
				t.Fatalf("resolveMetadata = %q, %v; want %q", s.Metadata, err, tt.want)
			}
			var cfg vmm.Config
			applyDevices(s, &cfg)
			if (cfg.MMDS != nil) != tt.wantMMDS || tt.wantMMDS && string(cfg.MMDS.Data) != tt.want {
				t.Errorf("MMDS %+v, want data %q", cfg.MMDS, tt.want)
			}
		})
	}
}
