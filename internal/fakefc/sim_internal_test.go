package fakefc

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestParseConnect(t *testing.T) {
	tests := []struct {
		line string
		port uint32
		ok   bool
	}{
		{"CONNECT 1024\n", 1024, true},
		{"CONNECT 0\n", 0, true},
		{"CONNECT 4294967295\n", 4294967295, true},
		{"CONNECT 4294967296\n", 0, false},
		{"CONNECT -1\n", 0, false},
		{"CONNECT \n", 0, false},
		{"CONNECT abc\n", 0, false},
		{"connect 1024\n", 0, false},
		{"OK 1024\n", 0, false},
		{"\n", 0, false},
	}
	for _, tt := range tests {
		port, ok := parseConnect(tt.line)
		if port != tt.port || ok != tt.ok {
			t.Errorf("parseConnect(%q) = %d, %t; want %d, %t", tt.line, port, ok, tt.port, tt.ok)
		}
	}
}

func FuzzParseConnect(f *testing.F) {
	for _, s := range []string{"CONNECT 1024\n", "CONNECT x\n", "", "CONNECT  7\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		port, ok := parseConnect(line)
		if !ok {
			return
		}
		// Whatever parses names a port that a canonical line names too.
		if p2, ok2 := parseConnect(fmt.Sprintf("CONNECT %d\n", port)); !ok2 || p2 != port {
			t.Errorf("%q parses to %d, which does not round-trip", line, port)
		}
	})
}

// fakeExt4 writes a file with an ext4 superblock magic and returns its path.
func fakeExt4(t *testing.T) string {
	t.Helper()
	b := make([]byte, 2048)
	b[ext4MagicOffset], b[ext4MagicOffset+1] = 0x53, 0xef
	p := filepath.Join(t.TempDir(), "root.ext4")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIsExt4(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(short, []byte{0x53, 0xef}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{fakeExt4(t): true, short: false, other: false, filepath.Join(dir, "missing"): false} {
		if got := isExt4(path); got != want {
			t.Errorf("isExt4(%s) = %t, want %t", filepath.Base(path), got, want)
		}
	}
}

func TestSimPlan(t *testing.T) {
	img := fakeExt4(t)
	plain := filepath.Join(t.TempDir(), "plain.img")
	if err := os.WriteFile(plain, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	root := object{"drive_id": "rootfs", "path_on_host": img, "is_root_device": true, "is_read_only": false}
	vsock := object{"guest_cid": 3, "uds_path": "v.sock"}
	tests := []struct {
		name   string
		boot   string
		drives []object
		vsock  object
		ok     bool
		want   simPlan
	}{
		{name: "no vsock", boot: "console=ttyS0", drives: []object{root}},
		{name: "root not ext4", boot: "console=ttyS0", vsock: vsock, drives: []object{{"drive_id": "rootfs", "path_on_host": plain, "is_root_device": true}}},
		{name: "no root drive", boot: "console=ttyS0", vsock: vsock, drives: []object{{"drive_id": "data", "path_on_host": img, "is_root_device": false}}},
		{
			name: "defaults", boot: "console=ttyS0 reboot=k", vsock: vsock, drives: []object{root}, ok: true,
			want: simPlan{image: img, init: "/sbin/init", hostname: "vm-1", cmdline: "console=ttyS0 reboot=k kindling.vsock=unix:/run/kindling-vsock"},
		},
		{
			name: "init, its arguments, hostname from ip=", boot: "init=/bin/agent ip=10.0.0.2::10.0.0.1:255.255.255.0:box:eth0:off -- --listen x",
			vsock: vsock, drives: []object{root}, ok: true,
			want: simPlan{
				image: img, init: "/bin/agent", args: []string{"--listen", "x"}, hostname: "box",
				cmdline: "init=/bin/agent ip=10.0.0.2::10.0.0.1:255.255.255.0:box:eth0:off -- --listen x kindling.vsock=unix:/run/kindling-vsock",
			},
		},
		{
			name: "other drives after the root", boot: "", vsock: vsock, ok: true,
			drives: []object{
				{"drive_id": "a", "path_on_host": "/srv/a.img", "is_root_device": false, "is_read_only": true},
				{"drive_id": "rootfs", "path_on_host": img, "is_root_device": true, "is_read_only": true},
				{"drive_id": "b", "path_on_host": "/srv/b.img", "is_root_device": false},
			},
			want: simPlan{
				image: img, readOnly: true, init: "/sbin/init", hostname: "vm-1", cmdline: "kindling.vsock=unix:/run/kindling-vsock",
				drives: []simDrive{{ID: "a", Path: "/srv/a.img", Dev: "/dev/vdb", ReadOnly: true}, {ID: "b", Path: "/srv/b.img", Dev: "/dev/vdc"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &vm{id: "vm-1", boot: object{"kernel_image_path": "k", "boot_args": tt.boot}, drives: tt.drives, vsock: tt.vsock}
			got, ok := m.simPlan()
			if ok != tt.ok {
				t.Fatalf("simPlan ok = %t, want %t", ok, tt.ok)
			}
			if ok && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("simPlan =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseKernelIP(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    string // "" for none
	}{
		{"console=ttyS0 ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off", "10.0.0.2/24 via 10.0.0.1 on eth0"},
		{"ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:1.1.1.1", "172.16.0.2/30 via 172.16.0.1 on eth0"},
		{"ip=10.1.2.3:::255.255.0.0:::off", "10.1.2.3/16 via invalid IP on "},
		{"ip=10.1.2.3", "10.1.2.3/8 via invalid IP on "},
		{"ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off ip=10.0.0.9::10.0.0.1:255.255.255.0::eth1:off", "10.0.0.9/24 via 10.0.0.1 on eth1"},
		{"ip=dhcp", ""},
		{"ip=off", ""},
		{"ip=10.0.0.2::10.0.0.1:garbage::eth0:off", ""},
		{"console=ttyS0 -- ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off", ""},
		{"", ""},
	} {
		ip, ok := parseKernelIP(lastKernelIP(tc.cmdline))
		got := ""
		if ok {
			got = fmt.Sprintf("%s via %s on %s", ip.addr, ip.gw, ip.device)
		}
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.cmdline, got, tc.want)
		}
	}
}

func TestSimCgroupCreator(t *testing.T) {
	tests := []struct {
		name  string
		pid   int
		start uint64
		ok    bool
	}{
		{"box-123-456789", 123, 456789, true},
		{"a-b-c-1-2", 1, 2, true},
		{"box-123-456789-t99_1234", 123, 456789, true},
		{"box-123-456789-t", 0, 0, false},
		{"box-123-456789-tx-y", 0, 0, false},
		{"box-26825", 0, 0, false},
		{"box-0-5", 0, 0, false},
		{"box-123-x", 0, 0, false},
		{"123-456", 0, 0, false},
	}
	for _, tt := range tests {
		pid, start, ok := simCgroupCreator(tt.name)
		if pid != tt.pid || start != tt.start || ok != tt.ok {
			t.Errorf("simCgroupCreator(%q) = %d, %d, %t, want %d, %d, %t", tt.name, pid, start, ok, tt.pid, tt.start, tt.ok)
		}
	}
}

func TestSimCgroupName(t *testing.T) {
	start, err := kunix.ProcessStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("-%d-%d", os.Getpid(), start)
	for _, tt := range []struct{ id, tag, want string }{
		{"box", "", "box" + base},
		{"a/b c", "", "a_b_c" + base},
		{"box", "12_34", "box" + base + "-t12_34"},
		{"box", "1-2.3/4", "box" + base + "-t1234"},
		{"box", strings.Repeat("x", 50), "box" + base + "-t" + strings.Repeat("x", maxCgroupTag)},
		{"box", "-./", "box" + base},
	} {
		t.Run(tt.want, func(t *testing.T) {
			t.Setenv(EnvCgroupTag, tt.tag)
			got, err := simCgroupName(tt.id)
			if err != nil || got != tt.want {
				t.Fatalf("simCgroupName(%q) with tag %q = %q, %v; want %q", tt.id, tt.tag, got, err, tt.want)
			}
			if pid, st, ok := simCgroupCreator(got); !ok || pid != os.Getpid() || st != start {
				t.Errorf("simCgroupCreator(%q) = %d, %d, %t: not this process", got, pid, st, ok)
			}
		})
	}
}
