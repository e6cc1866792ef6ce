package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestSnapshotRestore snapshots a running guest and restores it into a new
// Firecracker process, which must then run.
func TestSnapshotRestore(t *testing.T) {
	tests := []struct {
		name        string
		pauseAround bool
		resume      bool
		want        fcapi.InstanceState
	}{
		{name: "paused first, resume on load", resume: true, want: fcapi.StateRunning},
		{name: "pause around, stay paused", pauseAround: true, resume: false, want: fcapi.StatePaused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backends(t, "", func(t *testing.T, b backend) {
				cfg := testConfig(t, b, "snap", guest.Halt)
				cfg.Placeholders = 2
				m := startMachine(t, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()

				dir := filepath.Join(cfg.RunDir, "snap")
				if !tt.pauseAround {
					if _, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: dir}); !errors.Is(err, ErrInvalidState) {
						t.Fatalf("snapshot of a running VM without PauseAround: %v, want ErrInvalidState", err)
					}
					if err := m.Pause(ctx); err != nil {
						t.Fatal(err)
					}
				}
				snap, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: dir, PauseAround: tt.pauseAround})
				if err != nil {
					t.Fatalf("CreateSnapshot: %v", err)
				}
				if tt.pauseAround {
					assertInstanceState(t, m, fcapi.StateRunning) // resumed afterwards
				}
				for _, p := range []string{snap.SnapshotPath, snap.MemPath} {
					if _, err := os.Stat(p); err != nil {
						t.Fatalf("snapshot file: %v", err)
					}
				}
				if len(snap.Pool) != 2 {
					t.Errorf("snapshot pool %v, want 2 slots", snap.Pool)
				}

				rdir := testutil.ShortTempDir(t)
				r, err := Restore(ctx, RestoreConfig{
					Snapshot: snap,
					Config:   Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env},
					Resume:   tt.resume,
				})
				if err != nil {
					t.Fatalf("Restore: %v", err)
				}
				t.Cleanup(func() { stopAndCheck(t, r) })
				assertInstanceState(t, r, tt.want)
				if rp, _ := r.PID(); rp == 0 {
					t.Error("restored machine has no PID")
				}
				if got := len(r.Pool()); got != 2 {
					t.Errorf("restored pool has %d slots, want 2", got)
				}
				if !tt.resume {
					if err := r.Resume(ctx); err != nil {
						t.Fatalf("Resume restored VM: %v", err)
					}
					assertInstanceState(t, r, fcapi.StateRunning)
				}
			})
		})
	}
}

// TestRestoreFailures: bad snapshots give clear errors and leave nothing.
func TestRestoreFailures(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "snap", guest.Halt)
		m := startMachine(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		snap, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: filepath.Join(cfg.RunDir, "snap"), PauseAround: true})
		if err != nil {
			t.Fatal(err)
		}

		t.Run("missing memory file", func(t *testing.T) {
			s := snap
			s.MemPath = filepath.Join(cfg.RunDir, "nope.mem")
			_, err := Restore(ctx, RestoreConfig{Snapshot: s, Config: Config{Firecracker: b.path, RunDir: testutil.ShortTempDir(t), Env: cfg.Env}})
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "nope.mem") {
				t.Fatalf("Restore: %v, want a config error naming the file", err)
			}
		})
		t.Run("other release", func(t *testing.T) {
			s := snap
			s.Firecracker = "1.2.0"
			rdir := testutil.ShortTempDir(t)
			_, err := Restore(ctx, RestoreConfig{Snapshot: s, Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env}})
			if err == nil || !strings.Contains(err.Error(), "written by Firecracker 1.2.0") {
				t.Fatalf("Restore: %v, want a release mismatch", err)
			}
			assertDirHoldsOnly(t, rdir)
		})
		t.Run("corrupt snapshot", func(t *testing.T) {
			bad := filepath.Join(cfg.RunDir, "corrupt.state")
			if err := os.WriteFile(bad, []byte("not a snapshot"), 0o600); err != nil {
				t.Fatal(err)
			}
			s := snap
			s.SnapshotPath = bad
			rdir := testutil.ShortTempDir(t)
			began := time.Now()
			_, err := Restore(ctx, RestoreConfig{Snapshot: s, Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env}, Resume: true})
			t.Logf("Restore failed after %v: %v", time.Since(began), err)
			if err == nil || !strings.Contains(err.Error(), "load-snapshot") {
				t.Fatalf("Restore: %v, want a load-snapshot error", err)
			}
			assertDirHoldsOnly(t, rdir)
		})
		t.Run("network override", func(t *testing.T) {
			rdir := testutil.ShortTempDir(t)
			_, err := Restore(ctx, RestoreConfig{Snapshot: snap, Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env},
				NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", TapName: "tap-nope"}}})
			if err == nil {
				t.Fatal("Restore with an override of a missing interface succeeded")
			}
			t.Logf("Restore: %v", err)
			ver, verr := m.Version(ctx)
			if verr != nil {
				t.Fatal(verr)
			}
			if ver.Less(fcapi.FeatureNetworkOverrides.Since()) != errors.Is(err, ErrNotSupported) {
				t.Errorf("Firecracker %s: error %v; want ErrNotSupported exactly when the release lacks overrides", ver, err)
			}
			assertDirHoldsOnly(t, rdir)
		})
	})
}

// assertDirHoldsOnly fails if dir holds anything but Firecracker's log
// file (which the failed start created and removed: so nothing at all).
func assertDirHoldsOnly(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

// TestRestoreOverrideOldRelease: a release without network overrides (the
// fake emulating 1.7.0) gives ErrNotSupported, not a 400.
func TestRestoreOverrideOldRelease(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t), fakeSettings: `{"version":"1.7.0"}`}
	cfg := testConfig(t, b, "old", guest.Halt)
	m := startMachine(t, cfg)
	ctx := context.Background()
	snap, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: filepath.Join(cfg.RunDir, "snap"), PauseAround: true})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Firecracker != "1.7.0" {
		t.Errorf("snapshot release %q, want 1.7.0", snap.Firecracker)
	}
	rdir := testutil.ShortTempDir(t)
	_, err = Restore(ctx, RestoreConfig{Snapshot: snap, Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env},
		NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", TapName: "tap1"}}})
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Restore with overrides on 1.7.0: %v, want ErrNotSupported", err)
	}
	assertDirHoldsOnly(t, rdir)
}

// TestDiffSnapshot takes a full then a diff snapshot. Releases before 1.13
// allow diff snapshots only with dirty page tracking: without it they must
// refuse clearly, with it (Config.TrackDirtyPages) every release takes one.
func TestDiffSnapshot(t *testing.T) {
	each := func(t *testing.T, b backend) {
		for _, track := range []bool{false, true} {
			t.Run(fmt.Sprintf("track=%v", track), func(t *testing.T) { testDiffSnapshot(t, b, track) })
		}
	}
	backends(t, "", each)
	t.Run("fake-1.7.0", func(t *testing.T) {
		testutil.CheckLeaks(t)
		each(t, backend{name: "fake", path: testutil.FakeFirecracker(t), fakeSettings: `{"version":"1.7.0"}`})
	})
}

func testDiffSnapshot(t *testing.T, b backend, track bool) {
	cfg := testConfig(t, b, "diff", guest.Halt)
	cfg.TrackDirtyPages = track
	m := startMachine(t, cfg)
	ctx := context.Background()
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: filepath.Join(cfg.RunDir, "full")}); err != nil {
		t.Fatal(err)
	}
	snap, err := m.CreateSnapshot(ctx, SnapshotOptions{
		SnapshotPath: filepath.Join(cfg.RunDir, "diff.state"),
		MemPath:      filepath.Join(cfg.RunDir, "diff.mem"),
		Diff:         true,
	})
	ver, _ := m.Version(ctx)
	if err != nil {
		if track || ver.AtLeast(fcapi.MustParseVersion("1.13.0")) || !errors.Is(err, fcapi.ErrBadRequest) {
			t.Fatalf("diff snapshot on %s (dirty page tracking %v): %v", ver, track, err)
		}
		t.Logf("diff snapshot on %s: %v", ver, err)
		return
	}
	if !snap.Diff || snap.MemPath != filepath.Join(cfg.RunDir, "diff.mem") {
		t.Errorf("snapshot %+v", snap)
	}
	assertInstanceState(t, m, fcapi.StatePaused) // no PauseAround: stays paused
}

// TestSnapshotRelocateDrives snapshots a VM whose writable drive is
// recorded at a frozen copy (Relocate), then restores it with the drive
// switched to a file of the restored VM's own (DriveOverrides): the source
// keeps its drive, the snapshot names the copy, and the restored VMM holds
// only its own file open.
func TestSnapshotRelocateDrives(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "reloc", guest.Halt)
		live := filepath.Join(cfg.RunDir, "data.img")
		frozen := filepath.Join(cfg.RunDir, "frozen.img")
		own := filepath.Join(cfg.RunDir, "own.img")
		for _, p := range []string{live, frozen, own} {
			if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg.Drives = []Drive{{ID: "data", Path: live}}
		cfg.Placeholders = 1
		m := startMachine(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		snap, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: filepath.Join(cfg.RunDir, "snap"),
			Relocate: []DriveOverride{{ID: "data", Path: frozen}}})
		if err != nil {
			t.Fatalf("CreateSnapshot: %v", err)
		}
		if got := snap.Config.Drives[0].Path; got != frozen {
			t.Errorf("snapshot records drive at %s, want %s", got, frozen)
		}
		assertOpenDrive(t, m, "data", live, frozen) // switched back
		if err := m.Resume(ctx); err != nil {
			t.Fatal(err)
		}

		t.Run("unknown drive", func(t *testing.T) {
			if err := m.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			defer m.Resume(ctx)
			_, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: filepath.Join(cfg.RunDir, "snap2"),
				Relocate: []DriveOverride{{ID: "nope", Path: frozen}}})
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("relocate an unknown drive: %v, want ErrInvalidConfig", err)
			}
			assertOpenDrive(t, m, "data", live, frozen)
		})

		tests := []struct {
			name string
			rc   func(rc *RestoreConfig)
		}{
			{"explicit override", func(rc *RestoreConfig) { rc.DriveOverrides = []DriveOverride{{ID: "data", Path: own}} }},
			{"from config drives", func(rc *RestoreConfig) { rc.Config.Drives = []Drive{{ID: "data", Path: own}} }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rc := RestoreConfig{Snapshot: snap, Config: Config{Firecracker: b.path, RunDir: testutil.ShortTempDir(t), Env: cfg.Env}, Resume: true}
				tt.rc(&rc)
				r, err := Restore(ctx, rc)
				if err != nil {
					t.Fatalf("Restore: %v", err)
				}
				defer stopAndCheck(t, r)
				assertInstanceState(t, r, fcapi.StateRunning)
				if got := r.Config().Drives[0].Path; got != own {
					t.Errorf("restored config has drive at %s, want %s", got, own)
				}
				assertOpenDrive(t, r, "data", own, frozen)
			})
		}
		t.Run("override of a missing drive", func(t *testing.T) {
			rdir := testutil.ShortTempDir(t)
			_, err := Restore(ctx, RestoreConfig{Snapshot: snap, Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env},
				DriveOverrides: []DriveOverride{{ID: "nope", Path: own}}})
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Restore: %v, want ErrInvalidConfig", err)
			}
			assertDirHoldsOnly(t, rdir)
		})
		t.Run("vsock override without vsock", func(t *testing.T) {
			rdir := testutil.ShortTempDir(t)
			_, err := Restore(ctx, RestoreConfig{Snapshot: snap, Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env},
				VsockOverride: filepath.Join(rdir, "v.sock")})
			if !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, ErrNotSupported) {
				t.Fatalf("Restore: %v, want a config or not-supported error", err)
			}
			assertDirHoldsOnly(t, rdir)
		})
	})
}

// assertOpenDrive checks that the VMM has drive id at want: through
// GET /vm/config, and for a real Firecracker also through its open files
// (it must not hold notWant open).
func assertOpenDrive(t *testing.T, m *Machine, id, want, notWant string) {
	t.Helper()
	ctx := context.Background()
	vc, err := m.Client().GetVMConfig(ctx)
	if err != nil {
		t.Fatalf("GET /vm/config: %v", err)
	}
	found := false
	for _, d := range vc.Drives {
		if d.DriveID == id {
			found = true
			if d.PathOnHost != want {
				t.Errorf("drive %s at %s, want %s", id, d.PathOnHost, want)
			}
		}
	}
	if !found {
		t.Logf("GET /vm/config shows no drive %s: %+v", id, vc.Drives)
	}
	pid, _ := m.PID()
	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name())); err == nil {
			open[l] = true
		}
	}
	if open[notWant] {
		t.Errorf("the VMM holds %s open", notWant)
	}
	if len(open) > 0 && !open[want] && strings.Contains(fmt.Sprint(open), ".img") {
		t.Errorf("the VMM holds image files open but not %s: %v", want, open)
	}
}
