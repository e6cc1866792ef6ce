package sandbox

import (
	"context"
	"errors"
	"github.com/kindling-vm/kindling/fcapi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestFaultCorruptState damages the state file of a sandbox: Inspect and
// List give a clear error naming the file, and GC (or rm) leaves nothing,
// not even the VMM of a sandbox that was running.
func TestFaultCorruptState(t *testing.T) {
	damages := []struct {
		name    string
		content string
	}{
		{"garbage", "}{ not json"},
		{"empty", ""},
		{"no-version", `{"data":{}}`},
		{"bad-data", `{"version":1,"data":{"status":42}}`},
	}
	for _, running := range []bool{false, true} {
		for _, d := range damages {
			name := d.name
			if running {
				name = "running/" + name
			}
			t.Run(name, func(t *testing.T) {
				r, fc := newFaultRuntime(t, false)
				ctx := context.Background()
				spec := Spec{ID: "hurt", Kernel: haltGuest(t, "hurt"), Firecracker: fc, MemoryMiB: 16}
				var in Info
				var err error
				if running {
					in = mustStart(t, r, spec)
				} else if in, err = r.Create(ctx, spec, CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				stateFile := filepath.Join(in.Dir, "state.json")
				if err := os.WriteFile(stateFile, []byte(d.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := r.Inspect(ctx, "hurt"); err == nil || !strings.Contains(err.Error(), stateFile) {
					t.Errorf("inspect = %v; want an error naming %s", err, stateFile)
				}
				infos, err := r.List(ctx, ListOptions{})
				if err != nil || len(infos) != 1 || !strings.Contains(string(infos[0].Status), stateFile) {
					t.Errorf("list = %+v, %v; want one broken entry naming %s", infos, err, stateFile)
				}
				if _, err := r.Start(ctx, "hurt"); err == nil || !strings.Contains(err.Error(), stateFile) {
					t.Errorf("start = %v; want an error naming %s", err, stateFile)
				}
				// D10: what runs is found from the host and stopped; with
				// nothing running, the error names the broken file.
				err = r.Stop(ctx, "hurt")
				switch {
				case running && err != nil:
					t.Errorf("stop of a running sandbox with a broken record = %v; want it stopped", err)
				case running:
					if procs, _ := sandboxProcesses(in.Dir); len(procs) > 0 {
						t.Errorf("stop left %d processes running", len(procs))
					}
				case err == nil || !strings.Contains(err.Error(), stateFile):
					t.Errorf("stop = %v; want an error naming %s", err, stateFile)
				}
				gcLeavesNothing(t, r)
				if _, err := r.Inspect(ctx, "hurt"); !errors.Is(err, ErrNotFound) {
					t.Errorf("inspect after gc: %v; want not found", err)
				}
			})
		}
	}
}

// TestFaultDiskFull puts the state root on a small tmpfs and fills it at
// several moments: each operation fails with a clear error or works, and
// once space is back GC leaves nothing.
func TestFaultDiskFull(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *Runtime, spec Spec, fill func(), free func())
	}{
		{"create", func(t *testing.T, r *Runtime, spec Spec, fill, free func()) {
			ctx := context.Background()
			fill()
			_, err := r.Create(ctx, spec, CreateOptions{})
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("create on a full disk = %v; want ENOSPC", err)
			}
			if infos, _ := r.List(ctx, ListOptions{}); len(infos) != 0 {
				t.Errorf("a failed create left %+v", infos)
			}
			free()
			// Nothing of the failed create is in the way.
			if _, err := r.Create(ctx, spec, CreateOptions{}); err != nil {
				t.Errorf("create once space is back: %v", err)
			}
			if err := r.Remove(ctx, spec.ID, false); err != nil {
				t.Error(err)
			}
		}},
		{"start", func(t *testing.T, r *Runtime, spec Spec, fill, free func()) {
			ctx := context.Background()
			if _, err := r.Create(ctx, spec, CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			fill()
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := r.Start(sctx, spec.ID)
			cancel()
			t.Logf("start on a full disk: %v", err)
			if err != nil && !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space left") {
				t.Errorf("start on a full disk = %v; want it to work or to say the disk is full", err)
			}
			stopWithin(t, r, spec.ID, 5*time.Second)
			free()
			if err := r.Remove(ctx, spec.ID, false); err != nil {
				t.Error(err)
			}
		}},
		{"stop", func(t *testing.T, r *Runtime, spec Spec, fill, free func()) {
			ctx := context.Background()
			in := mustStart(t, r, spec)
			fill()
			// Stop may fail to record the exit, but must say why and
			// still end the VMM.
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := r.Stop(sctx, spec.ID)
			cancel()
			if err != nil && !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("stop on a full disk = %v; want nil or ENOSPC", err)
			}
			waitNoProcesses(t, "stop on a full disk", r.Root())
			got, err := r.Inspect(ctx, spec.ID)
			if err != nil || got.Status != Exited {
				t.Errorf("after stop on a full disk: %+v, %v", got, err)
			}
			t.Logf("exit recorded on a full disk: %+v (VMM pid %d)", got.Exit, in.PID)
			free()
			if err := r.Remove(ctx, spec.ID, false); err != nil {
				t.Error(err)
			}
		}},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) { testDiskFull(t, mode.real, tt.run) })
		}
	}
}

func testDiskFull(t *testing.T, real bool, run func(t *testing.T, r *Runtime, spec Spec, fill func(), free func())) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs as the state root")
	}
	testutil.CheckLeaks(t)
	var fc string
	if real {
		fc = testutil.Firecracker(t)
	} else {
		fc = testutil.FakeFirecracker(t)
	}
	root := testutil.ShortTempDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "kdfull", root).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", root).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, out)
		}
	})
	r, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertRootEmpty(t, r) })
	t.Cleanup(func() { killStrays(t, r.Root()) })
	filler := filepath.Join(root, ".filler")
	fill := func() { fillDisk(t, filler) }
	free := func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	run(t, r, Spec{ID: "full", Kernel: haltGuest(t, "full up"), Firecracker: fc, MemoryMiB: 32}, fill, free)
	os.Remove(filler)
	gcLeavesNothing(t, r)
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			return
		}
	}
}

// TestD8ChangeUndoneWhenRecordCannotBeSaved: pause, resume and drive attach change
// the VM, then record it; when the record cannot be saved (a full disk),
// the change is undone, so that the record stays true — no paused VM shown
// running (nor a running one paused), no hotplug slot handed out twice.
func TestD8ChangeUndoneWhenRecordCannotBeSaved(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *Runtime, spec Spec, fill func(), free func())
	}{
		{"pause", func(t *testing.T, r *Runtime, spec Spec, fill, free func()) {
			ctx := context.Background()
			mustStart(t, r, spec)
			fill()
			if err := r.Pause(ctx, spec.ID); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("pause on a full disk = %v; want ENOSPC", err)
			}
			free()
			got, err := r.Inspect(ctx, spec.ID)
			if err != nil || got.Status != Running {
				t.Fatalf("after a pause that could not be recorded: %+v, %v; want running", got.Status, err)
			}
			// The VM runs indeed, as its record says.
			c, err := fcapi.New(got.APISocket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if ii, err := c.GetInstanceInfo(ctx); err != nil || ii.State != fcapi.StateRunning {
				t.Errorf("the VM is %q (%v); its record says running", ii.State, err)
			}
			stopWithin(t, r, spec.ID, 5*time.Second)
			if err := r.Remove(ctx, spec.ID, false); err != nil {
				t.Error(err)
			}
		}},
		{"resume", func(t *testing.T, r *Runtime, spec Spec, fill, free func()) {
			ctx := context.Background()
			mustStart(t, r, spec)
			if err := r.Pause(ctx, spec.ID); err != nil {
				t.Fatal(err)
			}
			fill()
			if err := r.Resume(ctx, spec.ID); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("resume on a full disk = %v; want ENOSPC", err)
			}
			free()
			got, err := r.Inspect(ctx, spec.ID)
			if err != nil || got.Status != Paused {
				t.Fatalf("after a resume that could not be recorded: %+v, %v; want paused", got.Status, err)
			}
			// The VM is paused indeed, as its record says.
			c, err := fcapi.New(got.APISocket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if ii, err := c.GetInstanceInfo(ctx); err != nil || ii.State != fcapi.StatePaused {
				t.Errorf("the VM is %q (%v); its record says paused", ii.State, err)
			}
			if err := r.Resume(ctx, spec.ID); err != nil {
				t.Errorf("resume once space is back: %v", err)
			}
			stopWithin(t, r, spec.ID, 5*time.Second)
			if err := r.Remove(ctx, spec.ID, false); err != nil {
				t.Error(err)
			}
		}},
		{"attach", func(t *testing.T, r *Runtime, spec Spec, fill, free func()) {
			ctx := context.Background()
			spec.Placeholders = 1
			mustStart(t, r, spec)
			disk := filepath.Join(t.TempDir(), "d.img")
			if err := os.WriteFile(disk, make([]byte, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			fill()
			if _, err := r.AttachDrive(ctx, spec.ID, Disk{Path: disk, ReadOnly: true}); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("attach on a full disk = %v; want ENOSPC", err)
			}
			free()
			got, err := r.Inspect(ctx, spec.ID)
			if err != nil || len(got.Slots) != 1 || got.Slots[0].Drive != nil {
				t.Fatalf("after an attach that could not be recorded: %+v, %v; want its one slot free", got.Slots, err)
			}
			// The VM's slot is free indeed, as its record says (so it is
			// not handed out a second time over a drive the guest uses).
			c, err := fcapi.New(got.APISocket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			vc, err := c.GetVMConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range vc.Drives {
				if d.PathOnHost == disk {
					t.Fatalf("the VM holds %s in %s; its record says the slot is free", disk, d.DriveID)
				}
			}
			if slot, err := r.AttachDrive(ctx, spec.ID, Disk{Path: disk, ReadOnly: true}); err != nil || slot != got.Slots[0].ID {
				t.Errorf("attach once space is back = %q, %v", slot, err)
			}
			stopWithin(t, r, spec.ID, 5*time.Second)
			if err := r.Remove(ctx, spec.ID, false); err != nil {
				t.Error(err)
			}
		}},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) { testDiskFull(t, mode.real, tt.run) })
		}
	}
}
