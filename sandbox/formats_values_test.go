package sandbox

import (
	"time"

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
// (labels came with version 2).
func formatsSpec(v int) Spec {
	var labels map[string]string
	if v >= 2 {
		labels = map[string]string{"app": "web", "team/owner": "infra"}
	}
	return Spec{
		Labels: labels,
		ID:     "web", Kernel: "/k/vmlinux", Initrd: "/k/initrd", KernelArgs: "console=ttyS0",
		Rootfs: &Disk{Path: "/d/root.img", ReadOnly: true}, Drives: []Disk{{Path: "/d/data.img"}},
		VCPUs: 2, MemoryMiB: 256, SMT: true, Net: []Net{{Auto: true}, {Tap: "kd1", MAC: "02:00:00:00:00:02"}},
		NetNS: "/run/netns/n0", VsockCID: 3, Firecracker: "/usr/bin/firecracker", Jailer: "/usr/bin/jailer",
		WaitConsole: "login:", Placeholders: 2, HotplugWritable: true,
	}
}

// formatsSlots is a hotplug pool with one drive attached.
func formatsSlots() []vmm.Slot {
	return []vmm.Slot{
		{ID: "pool0", Placeholder: "/run/kindling/web/pool0.img", Drive: &vmm.Drive{ID: "pool0", Path: "/d/extra.img", ReadOnly: true}, AttachedPath: "/d/extra.img"},
		{ID: "pool1", Placeholder: "/run/kindling/web/pool1.img"},
	}
}

// formatsRecord is a sandbox record with every stored field set.
func formatsRecord(stateVersion int) record {
	return record{
		ID: "web", Spec: formatsSpec(stateVersion), CreatedAt: formatsTime, AutoRemove: true, Status: Running,
		Kernel: "/k/vmlinux", Monitor: &procRef{PID: 100, StartTime: 12345},
		Machine: &vmm.MachineState{Version: stateVersion, ID: "web", PID: 101, StartTime: 12346,
			SocketPath: "/run/kindling/web/fc.sock", LogPath: "/run/kindling/web/firecracker.log",
			Firecracker: "1.14.2", Paused: true, Config: formatsConfig(), Pool: formatsSlots(), JailDir: "/srv/jailer/firecracker/web"},
		Taps:        []tapRef{{Name: "kd0", NetNS: "/run/netns/n0", MAC: "02:00:00:00:00:01", Owned: true}},
		RestoreFrom: "/snap/web",
		StartedAt:   formatsTime.Add(time.Second),
		Exit:        &Exit{Code: -1, Signal: "killed", At: formatsTime.Add(time.Minute), Error: "killed"},
	}
}

// formatsManifest is a snapshot manifest with every stored field set.
func formatsManifest(version int) manifest {
	return manifest{
		Version: version, CreatedAt: formatsTime, From: "web", Spec: formatsSpec(version), Kernel: "/k/vmlinux",
		Taps: []tapRef{{Name: "kd0", MAC: "02:00:00:00:00:01", Owned: true}},
		Snapshot: vmm.Snapshot{SnapshotPath: "/snap/web/vmstate", MemPath: "/snap/web/mem", Diff: true,
			Firecracker: "1.14.2", Config: formatsConfig(), Pool: formatsSlots()},
	}
}
