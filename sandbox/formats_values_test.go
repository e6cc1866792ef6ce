package sandbox

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// formatsConfig is a vmm.Config with every stored field set, for the
// golden-file tests of the formats that hold one.
func formatsConfig() vmm.Config {
	rl := &vmm.RateLimiter{
		Bandwidth: &vmm.TokenBucket{Size: 1 << 20, OneTimeBurst: 4096, RefillTime: time.Second},
		Ops:       &vmm.TokenBucket{Size: 100, RefillTime: 100 * time.Millisecond},
	}
	return vmm.Config{
		Firecracker: "/usr/bin/firecracker",
		Jailer: &vmm.JailerConfig{Path: "/usr/bin/jailer", UID: 12345, GID: 12346, ChrootBase: "/srv/jailer",
			NetNS: "/run/netns/n1", CgroupVersion: 2, Cgroups: []string{"cpu.max=max"}, NewPIDNS: true},
		ID: "web", RunDir: "/run/kindling/web", SocketPath: "/run/kindling/web/fc.sock",
		Kernel: "/k/vmlinux", Initrd: "/k/initrd", KernelArgs: "console=ttyS0",
		VCPUs: 2, MemoryMiB: 256, SMT: true, CPUTemplate: "T2", TrackDirtyPages: true,
		Drives: []vmm.Drive{{ID: "rootfs", Path: "/d/root.img", ReadOnly: true, Root: true, PartUUID: "abcd-01",
			CacheType: vmm.CacheWriteback, IOEngine: vmm.IOEngineAsync, RateLimiter: rl}},
		Placeholders:      2,
		NetworkInterfaces: []vmm.NetworkInterface{{ID: "eth0", TapName: "kd0", MAC: "02:00:00:00:00:01", RxRateLimiter: rl, TxRateLimiter: rl}},
		Vsock:             &vmm.Vsock{CID: 3, Path: "/run/kindling/web/vsock.sock"},
		Entropy:           &vmm.Entropy{RateLimiter: rl},
		Balloon:           &vmm.Balloon{AmountMiB: 64, DeflateOnOOM: true, StatsInterval: 5 * time.Second},
		MemoryHotplug:     &vmm.MemoryHotplug{TotalMiB: 1024, SlotMiB: 128, BlockMiB: 2},
		LogLevel:          "Debug", LogPath: "/run/kindling/web/firecracker.log", MetricsPath: "/run/kindling/web/metrics",
		ConsolePath: "/run/kindling/web/console.log", WaitConsole: "login:",
		Env: []string{"A=1"}, NetNS: "/run/netns/n0",
	}
}

var formatsTime = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// formatsSpec is a Spec with every stored field set in format version v
// (labels came with version 2); cni adds the CNI networks, their
// directories and the published ports (state version 3, manifest 4).
func formatsSpec(v int, cni bool) Spec {
	var labels map[string]string
	if v >= 2 {
		labels = map[string]string{"app": "web", "team/owner": "infra"}
	}
	s := Spec{
		Labels: labels,
		ID:     "web", Kernel: "/k/vmlinux", Initrd: "/k/initrd", KernelArgs: "console=ttyS0",
		Rootfs: &Disk{Path: "/d/root.img", ReadOnly: true}, Drives: []Disk{{Path: "/d/data.img"}},
		VCPUs: 2, MemoryMiB: 256, SMT: true, Net: []Net{{Auto: true}, {Tap: "kd1", MAC: "02:00:00:00:00:02"}},
		NetNS: "/run/netns/n0", VsockCID: 3, Firecracker: "/usr/bin/firecracker", Jailer: "/usr/bin/jailer",
		WaitConsole: "login:", Placeholders: 2, HotplugWritable: true,
	}
	if cni {
		s.CNINetworks, s.Ports = []string{"testnet"}, []string{"8080:80/tcp"}
		s.CNIConfDir, s.CNIBinDirs = "/etc/cni/net.d", []string{"/opt/cni/bin", "/usr/lib/cni"}
	}
	return s
}

// formatsNetwork is a sandbox's network record: one CNI network and a
// published port.
func formatsNetwork() *network.Record {
	return &network.Record{Version: network.RecordVersion, SandboxID: "web",
		CNI: &network.CNIAttachment{SandboxID: "web", NetNS: "/run/netns/kindling-web", Interfaces: []network.CNIInterface{{
			Network: "testnet", IfName: "eth0", Tap: "kdtap0",
			ConfList: json.RawMessage(`{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"bridge"}]}`),
			Guest: network.GuestConfig{Address: netip.MustParsePrefix("10.88.0.2/24"), Gateway: netip.MustParseAddr("10.88.0.1"),
				DNS: []netip.Addr{netip.MustParseAddr("10.88.0.1")}, MAC: "02:00:00:00:00:03", MTU: 1500}}}},
		Ports: &network.Published{SandboxID: "web", Table: "kindling_p_0123456789abcdef", Target: netip.MustParseAddr("10.88.0.2"),
			Ports: []network.PortMapping{{HostPort: 8080, GuestPort: 80, Protocol: "tcp"}}},
	}
}

// formatsSlots is a hotplug pool with one drive attached.
func formatsSlots() []vmm.Slot {
	return []vmm.Slot{
		{ID: "pool0", Placeholder: "/run/kindling/web/pool0.img", Drive: &vmm.Drive{ID: "pool0", Path: "/d/extra.img", ReadOnly: true}, AttachedPath: "/d/extra.img"},
		{ID: "pool1", Placeholder: "/run/kindling/web/pool1.img"},
	}
}

// formatsRecord is a sandbox record with every stored field set in state
// format version v (the network came with version 3).
func formatsRecord(v int) record {
	rec := record{
		ID: "web", Spec: formatsSpec(v, v >= 3), CreatedAt: formatsTime, AutoRemove: true, Status: Running,
		Kernel: "/k/vmlinux", Monitor: &procRef{PID: 100, StartTime: 12345},
		Machine: &vmm.MachineState{Version: min(v, vmm.StateVersion), ID: "web", PID: 101, StartTime: 12346,
			SocketPath: "/run/kindling/web/fc.sock", LogPath: "/run/kindling/web/firecracker.log",
			Firecracker: "1.14.2", Paused: true, Config: formatsConfig(), Pool: formatsSlots(), JailDir: "/srv/jailer/firecracker/web"},
		Taps:        []tapRef{{Name: "kd0", NetNS: "/run/netns/n0", MAC: "02:00:00:00:00:01", Owned: true}},
		RestoreFrom: "/snap/web",
		StartedAt:   formatsTime.Add(time.Second),
		Exit:        &Exit{Code: -1, Signal: "killed", At: formatsTime.Add(time.Minute), Error: "killed"},
	}
	if v >= 3 {
		rec.NetActive, rec.Network = true, formatsNetwork()
	}
	return rec
}

// formatsManifest is a snapshot manifest with every stored field set.
func formatsManifest(version int) manifest {
	return manifest{
		Version: version, CreatedAt: formatsTime, From: "web", Spec: formatsSpec(version, version >= 4), Kernel: "/k/vmlinux",
		Taps: []tapRef{{Name: "kd0", MAC: "02:00:00:00:00:01", Owned: true}},
		Snapshot: vmm.Snapshot{SnapshotPath: "/snap/web/vmstate", MemPath: "/snap/web/mem", Diff: true,
			Firecracker: "1.14.2", Config: formatsConfig(), Pool: formatsSlots()},
	}
}

// compactConfLists compacts the conflists in rec's network record: the
// state file stores them indented, and only their JSON value matters.
func compactConfLists(t *testing.T, rec *record) {
	t.Helper()
	if rec.Network == nil || rec.Network.CNI == nil {
		return
	}
	for i := range rec.Network.CNI.Interfaces {
		in := &rec.Network.CNI.Interfaces[i]
		var b bytes.Buffer
		if err := json.Compact(&b, in.ConfList); err != nil {
			t.Fatal(err)
		}
		in.ConfList = b.Bytes()
	}
}
