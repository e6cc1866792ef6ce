package sandbox

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr string
	}{
		{in: "512", want: 512},
		{in: "512M", want: 512},
		{in: "512MiB", want: 512},
		{in: "512mb", want: 512},
		{in: "2G", want: 2048},
		{in: "2GiB", want: 2048},
		{in: "1T", want: 1 << 20},
		{in: "1048576K", want: 1024},
		{in: " 128 ", want: 128},
		{in: "", wantErr: "empty"},
		{in: "0", wantErr: "more than zero"},
		{in: "-5", wantErr: "not a whole number"},
		{in: "1.5G", wantErr: "not a whole number"},
		{in: "512X", wantErr: "unknown unit"},
		{in: "1000K", wantErr: "whole number of MiB"},
		{in: "G", wantErr: "not a whole number"},
		{in: "99999999999999999999", wantErr: "not a whole number"},
		{in: "9999999999T", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMemory(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMemory(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMemory(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"512", "2G", "1T", "0", "1048576K", "9999999999T", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mib, err := ParseMemory(s)
		if err == nil && mib <= 0 {
			t.Fatalf("ParseMemory(%q) = %d with no error", s, mib)
		}
	})
}

func TestParseDisk(t *testing.T) {
	tests := []struct {
		in      string
		want    Disk
		wantErr bool
	}{
		{in: "/a/b.img", want: Disk{Path: "/a/b.img"}},
		{in: "/a/b.img:ro", want: Disk{Path: "/a/b.img", ReadOnly: true}},
		{in: "/a/b.img:rw", want: Disk{Path: "/a/b.img"}},
		{in: ":ro", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDisk(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseDisk(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseNet(t *testing.T) {
	tests := []struct {
		in      string
		want    Net
		wantErr bool
	}{
		{in: "auto", want: Net{Auto: true}},
		{in: "auto,mac=02:00:00:00:00:01", want: Net{Auto: true, MAC: "02:00:00:00:00:01"}},
		{in: "tap=tap0", want: Net{Tap: "tap0"}},
		{in: "tap=tap0,mac=02:00:00:00:00:01", want: Net{Tap: "tap0", MAC: "02:00:00:00:00:01"}},
		{in: "", wantErr: true},
		{in: "tap=", wantErr: true},
		{in: "auto,tap=x", wantErr: true},
		{in: "mac=02:00:00:00:00:01", wantErr: true},
		{in: "bridge=br0", wantErr: true},
		{in: "auto=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNet(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseNet(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestLoadSpecFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte(`
name = "web1"
kernel = "/k/vmlinux"
kernel_args = "quiet"
cpus = 2
memory = "1G"
smt = false
net = ["auto", "tap=tap9,mac=02:00:00:00:00:09"]
vsock = 3
hotplug_slots = 4
wait_console = "ready"

[rootfs]
path = "/r/root.img"
read_only = true

[[drives]]
path = "/d/data.img"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSpecFile(good)
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		ID: "web1", Kernel: "/k/vmlinux", KernelArgs: "quiet", VCPUs: 2,
		Memory: "1G", MemoryMiB: 1024,
		NetFlags:     []string{"auto", "tap=tap9,mac=02:00:00:00:00:09"},
		Net:          []Net{{Auto: true}, {Tap: "tap9", MAC: "02:00:00:00:00:09"}},
		VsockCID:     3,
		Placeholders: 4, WaitConsole: "ready",
		Rootfs: &Disk{Path: "/r/root.img", ReadOnly: true},
		Drives: []Disk{{Path: "/d/data.img"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadSpecFile:\n got %+v\nwant %+v", got, want)
	}

	bad := []struct{ name, body, wantErr string }{
		{"unknown-key", "kernal = \"/k\"\n", "unknown setting kernal"},
		{"bad-memory", "memory = \"lots\"\n", "memory \"lots\""},
		{"bad-net", "net = [\"bridge\"]\n", "net \"bridge\""},
		{"bad-toml", "cpus = = 2\n", "config file"},
		{"wrong-type", "cpus = \"two\"\n", "config file"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".toml")
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadSpecFile(p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadSpecFile(%s) error = %v; want one containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
	if _, err := LoadSpecFile(filepath.Join(dir, "missing.toml")); err == nil {
		t.Fatal("LoadSpecFile of a missing file: no error")
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte("name = \"a\"\ncpus = 2\nmemory = \"1G\"\nnet = [\"auto\"]\n"))
	f.Add([]byte("[rootfs]\npath = \"/x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseSpec("fuzz", data)
		if err == nil && s.Memory != "" && s.MemoryMiB <= 0 {
			t.Fatalf("memory %q parsed to %d", s.Memory, s.MemoryMiB)
		}
	})
}
