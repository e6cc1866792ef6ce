package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestAttachDetachDrive(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "hotplug", guest.Halt)
		cfg.Placeholders = 2
		m := startMachine(t, cfg)
		ctx := context.Background()

		disk := func(name string) string {
			p := filepath.Join(cfg.RunDir, name)
			if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
		a, bdisk, c := disk("a.img"), disk("b.img"), disk("c.img")

		if _, err := m.AttachDrive(ctx, Drive{Path: a}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("writable drive into a read-only pool: %v, want ErrInvalidConfig", err)
		}
		slot, err := m.AttachDrive(ctx, Drive{ID: "data", Path: a, ReadOnly: true})
		if err != nil {
			t.Fatalf("AttachDrive: %v", err)
		}
		if slot != "pool0" {
			t.Errorf("slot %q, want pool0", slot)
		}
		assertDrivePath(t, m, slot, a)
		if _, err := m.AttachDrive(ctx, Drive{Path: bdisk, ReadOnly: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.AttachDrive(ctx, Drive{Path: c, ReadOnly: true}); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("third attach into a pool of 2: %v, want ErrPoolExhausted", err)
		}
		if err := m.DetachDrive(ctx, "data"); err != nil {
			t.Fatalf("DetachDrive by drive ID: %v", err)
		}
		assertDrivePath(t, m, slot, filepath.Join(cfg.RunDir, "pool0.img"))
		if err := m.DetachDrive(ctx, "data"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second detach: %v, want ErrNotFound", err)
		}
		if got, err := m.AttachDrive(ctx, Drive{Path: c, ReadOnly: true}); err != nil || got != "pool0" {
			t.Errorf("attach into the freed slot = %q, %v", got, err)
		}
		if st := m.State(); st.Pool[0].Drive == nil || st.Pool[0].Drive.Path != c {
			t.Errorf("state pool %+v does not record the attached drive", st.Pool)
		}
	})
}

func TestAttachDriveWritablePool(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	cfg := testConfig(t, b, "rw", guest.Halt)
	cfg.Placeholders = 1
	m := startMachine(t, cfg, WithPlaceholderAccess(PlaceholdersReadWrite))
	p := filepath.Join(cfg.RunDir, "rw.img")
	if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AttachDrive(context.Background(), Drive{Path: p, ReadOnly: true}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("read-only drive into a writable pool: %v, want ErrInvalidConfig", err)
	}
	if _, err := m.AttachDrive(context.Background(), Drive{Path: p}); err != nil {
		t.Errorf("writable drive into a writable pool: %v", err)
	}
}

func assertDrivePath(t *testing.T, m *Machine, id, want string) {
	t.Helper()
	vc, err := m.Client().GetVMConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range vc.Drives {
		if d.DriveID == id {
			if d.PathOnHost != want {
				t.Errorf("drive %s backed by %q, want %q", id, d.PathOnHost, want)
			}
			return
		}
	}
	t.Errorf("drive %s not in GET /vm/config: %+v", id, vc.Drives)
}

func TestResize(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	cfg := testConfig(t, b, "rs", guest.Halt)
	cfg.Balloon = &Balloon{AmountMiB: 0, DeflateOnOOM: true}
	m := startMachine(t, cfg)
	ctx := context.Background()
	if err := m.ResizeVCPUs(ctx, 4); !errors.Is(err, ErrNotSupported) {
		t.Errorf("ResizeVCPUs: %v, want ErrNotSupported", err)
	}
	// The test guest has no balloon driver, so Firecracker refuses the
	// update: what matters is that it was asked.
	if err := m.ResizeMemory(ctx, cfg.MemoryMiB-16); !errors.Is(err, fcapi.ErrBadRequest) {
		t.Errorf("shrink with a balloon: %v, want Firecracker's refusal", err)
	}
	if err := m.ResizeMemory(ctx, 0); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("resize to 0: %v, want ErrInvalidConfig", err)
	}
	if err := m.ResizeMemory(ctx, cfg.MemoryMiB+64); !errors.Is(err, ErrNotSupported) {
		t.Errorf("grow without virtio-mem: %v, want ErrNotSupported", err)
	}
}

func TestResizeMemoryHotplug(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "mem", guest.Halt)
		cfg.MemoryHotplug = &MemoryHotplug{TotalMiB: 256, SlotMiB: 128, BlockMiB: 2}
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := m.Start(ctx); err != nil {
			caps, _ := fcapiCapsOf(t, b)
			if !caps {
				if !errors.Is(err, fcapi.ErrNotSupported) || !errors.Is(err, ErrNotSupported) {
					t.Fatalf("Start with virtio-mem on a release without it: %v, want ErrNotSupported", err)
				}
				return
			}
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { stopAndCheck(t, m) })
		err = m.ResizeMemory(ctx, cfg.MemoryMiB+128)
		switch {
		case b.real && errors.Is(err, fcapi.ErrBadRequest):
			// The test guest has no virtio-mem driver, so the real
			// Firecracker answers "Device is not active": it was asked.
			t.Logf("grow with virtio-mem: %v", err)
		case err != nil:
			t.Fatalf("grow with virtio-mem: %v", err)
		default:
			st, err := m.Client().GetMemoryHotplug(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.RequestedSizeMiB != 128 {
				t.Errorf("requested %d MiB, want 128", st.RequestedSizeMiB)
			}
		}
		if err := m.ResizeMemory(ctx, cfg.MemoryMiB+512); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("grow past the device: %v, want ErrInvalidConfig", err)
		}
		if err := m.ResizeMemory(ctx, cfg.MemoryMiB-8); !errors.Is(err, ErrNotSupported) {
			t.Errorf("shrink without a balloon: %v, want ErrNotSupported", err)
		}
	})
}

// fcapiCapsOf reports whether b's release has memory hotplug, asking the
// binary for its version.
func fcapiCapsOf(t *testing.T, b backend) (bool, error) {
	t.Helper()
	if !b.real {
		return true, nil // the fake emulates 1.14.2 by default
	}
	out, err := exec.Command(b.path, "--version").Output()
	if err != nil {
		return false, err
	}
	fields := strings.Fields(string(out))
	for _, f := range fields {
		if v, err := fcapi.ParseVersion(f); err == nil {
			return fcapi.CapabilitiesOf(v).Supports(fcapi.FeatureMemoryHotplug), nil
		}
	}
	return false, fmt.Errorf("no version in %q", out)
}
