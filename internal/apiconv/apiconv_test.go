package apiconv

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

var allKinds = []error{errdefs.ErrNotFound, errdefs.ErrExists, errdefs.ErrInvalid, errdefs.ErrConflict,
	errdefs.ErrNotSupported, errdefs.ErrUnavailable, errdefs.ErrCorrupt}

// Each kind goes out as its own code and comes back as itself, and as no
// other kind.
func TestKindsRoundTrip(t *testing.T) {
	seen := map[connect.Code]bool{}
	for _, kind := range allKinds {
		t.Run(kind.Error(), func(t *testing.T) {
			sent := ToConnect(fmt.Errorf("sandbox %q: %w", "web", kind))
			code := connect.CodeOf(sent)
			if seen[code] {
				t.Fatalf("code %v used twice", code)
			}
			seen[code] = true
			back := FromConnect(connect.NewError(code, errors.New(`sandbox "web": x`)))
			for _, other := range allKinds {
				if got := errors.Is(back, other); got != (other == kind) {
					t.Errorf("errors.Is(back, %v) = %v", other, got)
				}
			}
			if back.Error() != `sandbox "web": x` {
				t.Errorf("message %q", back.Error())
			}
		})
	}
	if c := Code(errors.New("plain")); c != connect.CodeInternal {
		t.Errorf("a plain error: %v", c)
	}
	if c := Code(context.DeadlineExceeded); c != connect.CodeDeadlineExceeded {
		t.Errorf("deadline: %v", c)
	}
	if !errors.Is(FromConnect(connect.NewError(connect.CodeCanceled, errors.New("x"))), context.Canceled) {
		t.Error("a cancelled call does not match context.Canceled")
	}
	// A package sentinel of a kind (errdefs.New) is sent as its kind.
	locked := errdefs.New(errdefs.ErrConflict, "locked by another command")
	if c := Code(locked); c != connect.CodeFailedPrecondition {
		t.Errorf("locked: %v", c)
	}
}

// What crosses the wire comes back equal.
func TestInfoRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 1, 2, 3, 4, 5, time.UTC)
	in := sandbox.Info{
		ID: "web", Status: sandbox.Running, Kernel: "/k", CreatedAt: at, StartedAt: at.Add(time.Second),
		PID: 10, MonitorPID: 9, Exit: &sandbox.Exit{Code: -1, Signal: "killed", At: at, Error: "e"},
		Dir: "/r/web", APISocket: "/r/web/fc.sock", ConsoleLog: "/r/web/console.log", FirecrackerLog: "/r/web/firecracker.log",
		VsockSocket: "/r/web/vsock.sock", Taps: []sandbox.TapInfo{{Name: "t0", NetNS: "ns", MAC: "02:00:00:00:00:01", Created: true}},
		Slots:              []vmm.Slot{{ID: "pool0", Placeholder: "/p0", ReadOnly: true, Drive: &vmm.Drive{Path: "/d", ReadOnly: true}, AttachedPath: "/d"}, {ID: "pool1", Placeholder: "/p1"}},
		FirecrackerVersion: "1.14.2", RestoredFrom: "/snap", RecordID: "web-copy", JailUID: 1610612736, Chroot: "/srv/jailer/k1/firecracker/web/root",
		Network: &sandbox.NetworkInfo{Kind: "slot", NetNS: "/run/netns/kd-web", HostAddress: "10.200.0.6",
			Interfaces: []sandbox.NetInterfaceInfo{
				{Tap: "kd0", Address: "10.0.2.2/30", Gateway: "10.0.2.1", MAC: "02:00:00:00:00:03"},
				{Network: "web", Tap: "kd1", Address: "10.88.0.5/16", MAC: "02:00:00:00:00:04"},
			},
			Ports: []string{"8080:80/tcp"},
			Egress: &network.EgressPolicy{Default: "deny", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("2001:db8::1/128")}, Domains: []string{"pypi.org"}}},
		Spec: sandbox.Spec{ID: "web", Kernel: "/k", Demo: "idle", Initrd: "/i", KernelArgs: "a=b", Rootfs: &sandbox.Disk{Path: "/root.ext4", ReadOnly: true},
			Drives: []sandbox.Disk{{Path: "/d1"}}, VCPUs: 2, MemoryMiB: 256, SMT: true, Net: []sandbox.Net{{Auto: true, MAC: "02:00:00:00:00:02"}, {Tap: "tap1"}, {Slot: true}},
			NetNS: "ns", VsockCID: 3, Firecracker: "/fc", Jailer: "/j", WaitConsole: "ready", Placeholders: 2, HotplugWritable: true,
			Labels: map[string]string{"a": "b"}, Agent: true, CNINetworks: []string{"web"}, Ports: []string{"8080:80"},
			CNIConfDir: "/cni/conf", CNIBinDirs: []string{"/cni/bin"}, CPUTemplate: "T2", VMMLogLevel: "Debug",
			DriveRate: "10MB/s", NetRate: "1MB/s", Balloon: "64M", Entropy: true, Metadata: "{}",
			NetSlot: true, Egress: "deny", AllowEgress: []string{"10.0.0.0/8", "2001:db8::1", "pypi.org"},
			NoJailer: true, CPULimit: 1.5, MemoryLimit: "512M"},
	}
	// Every field of a spec crosses the wire but the config file's own
	// spellings: a field added to sandbox.Spec and not to the API fails here.
	sv := reflect.ValueOf(in.Spec)
	for i := range sv.NumField() {
		if name := sv.Type().Field(i).Name; name != "Memory" && name != "NetFlags" && sv.Field(i).IsZero() {
			t.Errorf("the test spec leaves %s unset: set it (and carry it in apiconv)", name)
		}
	}
	// The same for a description, and for a network's description.
	for _, v := range []reflect.Value{reflect.ValueOf(in), reflect.ValueOf(*in.Network), reflect.ValueOf(*in.Network.Egress)} {
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("the test %s leaves %s unset: set it (and carry it in apiconv)", v.Type().Name(), v.Type().Field(i).Name)
			}
		}
	}
	got := InfoFromPB(InfoToPB(in, time.Time{}))
	if !reflect.DeepEqual(got, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, in)
	}
	if p := InfoToPB(in, at); p.GetEndAt() == "" {
		t.Error("no end_at")
	}
}
