package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// The sentinels a caller matches are kindling's one set, the same values in
// every package that re-exports them.
func TestSentinelsAreTheSameValues(t *testing.T) {
	same := []struct {
		name      string
		got, want error
	}{
		{"sandbox.ErrNotFound", ErrNotFound, errdefs.ErrNotFound},
		{"sandbox.ErrExists", ErrExists, errdefs.ErrExists},
		{"sandbox.ErrNotSupported", ErrNotSupported, errdefs.ErrNotSupported},
		{"sandbox.ErrInvalid", ErrInvalid, errdefs.ErrInvalid},
		{"sandbox.ErrConflict", ErrConflict, errdefs.ErrConflict},
		{"sandbox.ErrUnavailable", ErrUnavailable, errdefs.ErrUnavailable},
		{"sandbox.ErrCorrupt", ErrCorrupt, errdefs.ErrCorrupt},
		{"vmm.ErrNotSupported", vmm.ErrNotSupported, errdefs.ErrNotSupported},
		{"vmm.ErrNotFound", vmm.ErrNotFound, errdefs.ErrNotFound},
		{"fcapi.ErrNotSupported", fcapi.ErrNotSupported, errdefs.ErrNotSupported},
		{"fcapi.ErrUnavailable", fcapi.ErrUnavailable, errdefs.ErrUnavailable},
		{"store.ErrNotFound", store.ErrNotFound, errdefs.ErrNotFound},
		{"store.ErrExists", store.ErrExists, errdefs.ErrExists},
	}
	for _, s := range same {
		if s.got != s.want {
			t.Errorf("%s is not the errdefs value", s.name)
		}
	}
	kinds := []struct {
		name      string
		err, kind error
	}{
		{"ErrInvalidSpec", ErrInvalidSpec, ErrInvalid},
		{"ErrNoFirecracker", ErrNoFirecracker, ErrInvalid},
		{"ErrInvalidState", ErrInvalidState, ErrConflict},
		{"vmm.ErrInvalidConfig", vmm.ErrInvalidConfig, ErrInvalid},
		{"vmm.ErrExited", vmm.ErrExited, ErrConflict},
		{"store.ErrLocked", store.ErrLocked, ErrConflict},
		{"store.ErrCorrupt", store.ErrCorrupt, ErrCorrupt},
		{"fcapi.ErrBadRequest", fcapi.ErrBadRequest, ErrInvalid},
	}
	for _, k := range kinds {
		if !errors.Is(k.err, k.kind) {
			t.Errorf("%s does not match %v", k.name, k.kind)
		}
	}
}

// errCase is one public entry point and the error it must return.
type errCase struct {
	name string
	call func(ctx context.Context) error
}

// checkAll runs every case and checks that its error matches want (and
// names nothing the CLI should add: no command or flag hints).
func checkAll(t *testing.T, want error, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := c.call(ctx)
			if !errors.Is(err, want) {
				t.Fatalf("error %v, want one matching %v", err, want)
			}
			for _, cli := range []string{"'kindling", "--name", "--force", "--net", "--demo"} {
				if containsWord(err.Error(), cli) {
					t.Errorf("error %q carries the CLI hint %q", err, cli)
				}
			}
		})
	}
}

func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w {
			return true
		}
	}
	return false
}

func TestErrNotFoundEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	in := mustStart(t, r, Spec{ID: "up", Kernel: haltGuest(t, "up"), Firecracker: fc, MemoryMiB: 32, Placeholders: 1})
	defer r.Remove(context.Background(), in.ID, true)
	const id = "nosuch"
	checkAll(t, ErrNotFound, []errCase{
		{"Inspect", func(ctx context.Context) error { _, err := r.Inspect(ctx, id); return err }},
		{"Start", func(ctx context.Context) error { _, err := r.Start(ctx, id); return err }},
		{"Stop", func(ctx context.Context) error { return r.Stop(ctx, id) }},
		{"Kill", func(ctx context.Context) error { return r.Kill(ctx, id) }},
		{"Remove", func(ctx context.Context) error { return r.Remove(ctx, id, false) }},
		{"Wait", func(ctx context.Context) error { _, err := r.Wait(ctx, id); return err }},
		{"Pause", func(ctx context.Context) error { return r.Pause(ctx, id) }},
		{"Resume", func(ctx context.Context) error { return r.Resume(ctx, id) }},
		{"Threads", func(ctx context.Context) error { _, err := r.Threads(ctx, id); return err }},
		{"AttachDrive", func(ctx context.Context) error {
			_, err := r.AttachDrive(ctx, id, Disk{Path: "/dev/null"})
			return err
		}},
		{"DetachDrive/sandbox", func(ctx context.Context) error { return r.DetachDrive(ctx, id, "pool0") }},
		{"DetachDrive/slot", func(ctx context.Context) error { return r.DetachDrive(ctx, in.ID, "nosuch-slot") }},
		{"Snapshot", func(ctx context.Context) error {
			_, err := r.Snapshot(ctx, id, t.TempDir(), SnapshotOptions{})
			return err
		}},
	})
}

func TestErrExistsEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	in := mustStart(t, r, Spec{ID: "taken", Kernel: haltGuest(t, "taken"), Firecracker: fc, MemoryMiB: 32})
	defer r.Remove(context.Background(), in.ID, true)
	snap := t.TempDir()
	if _, err := r.Snapshot(context.Background(), in.ID, snap, SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	checkAll(t, ErrExists, []errCase{
		{"Create", func(ctx context.Context) error {
			_, err := r.Create(ctx, Spec{ID: in.ID, Kernel: in.Kernel, Firecracker: fc}, CreateOptions{})
			return err
		}},
		{"Restore", func(ctx context.Context) error {
			_, err := r.Restore(ctx, snap, RestoreOptions{ID: in.ID, Firecracker: fc})
			return err
		}},
		{"Snapshot", func(ctx context.Context) error { _, err := r.Snapshot(ctx, in.ID, snap, SnapshotOptions{}); return err }},
	})
}

func TestErrInvalidEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	checkAll(t, ErrInvalid, []errCase{
		{"Create/id", func(ctx context.Context) error {
			_, err := r.Create(ctx, Spec{ID: "-bad", Firecracker: fc}, CreateOptions{})
			return err
		}},
		{"Create/config", func(ctx context.Context) error {
			_, err := r.Create(ctx, Spec{ID: "big", Firecracker: fc, VCPUs: 99}, CreateOptions{})
			return err
		}},
		{"Create/firecracker", func(ctx context.Context) error {
			t.Setenv(EnvFirecracker, "")
			t.Setenv("PATH", t.TempDir())
			_, err := r.Create(ctx, Spec{ID: "nofc"}, CreateOptions{})
			if !errors.Is(err, ErrNoFirecracker) {
				t.Errorf("error %v does not match ErrNoFirecracker", err)
			}
			return err
		}},
		{"Remove", func(ctx context.Context) error { return r.Remove(ctx, "a/b", false) }},
		{"Restore", func(ctx context.Context) error { _, err := r.Restore(ctx, t.TempDir(), RestoreOptions{}); return err }},
	})
}

func TestErrConflictEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	created, err := r.Create(ctx, Spec{ID: "idle", Kernel: haltGuest(t, "idle"), Firecracker: fc, MemoryMiB: 32}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, created.ID, true)
	up := mustStart(t, r, Spec{ID: "up", Kernel: haltGuest(t, "up"), Firecracker: fc, MemoryMiB: 32})
	defer r.Remove(ctx, up.ID, true)
	checkAll(t, ErrConflict, []errCase{
		{"Start", func(ctx context.Context) error { _, err := r.Start(ctx, up.ID); return err }},
		{"Remove", func(ctx context.Context) error { return r.Remove(ctx, up.ID, false) }},
		{"Pause", func(ctx context.Context) error { return r.Pause(ctx, created.ID) }},
		{"Resume", func(ctx context.Context) error { return r.Resume(ctx, created.ID) }},
		{"Snapshot", func(ctx context.Context) error {
			_, err := r.Snapshot(ctx, created.ID, t.TempDir(), SnapshotOptions{})
			return err
		}},
		{"AttachDrive", func(ctx context.Context) error {
			_, err := r.AttachDrive(ctx, created.ID, Disk{Path: "/dev/null"})
			return err
		}},
	})
}

func TestErrCorruptEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "hurt", Kernel: haltGuest(t, "hurt"), Firecracker: fc, MemoryMiB: 16}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, in.ID, true)
	if err := os.WriteFile(filepath.Join(in.Dir, "state.json"), []byte("}{"), 0o600); err != nil {
		t.Fatal(err)
	}
	snap := t.TempDir()
	if err := os.WriteFile(filepath.Join(snap, manifestName), []byte("}{"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkAll(t, ErrCorrupt, []errCase{
		{"Inspect", func(ctx context.Context) error { _, err := r.Inspect(ctx, in.ID); return err }},
		{"Start", func(ctx context.Context) error { _, err := r.Start(ctx, in.ID); return err }},
		{"Stop", func(ctx context.Context) error { return r.Stop(ctx, in.ID) }},
		{"Pause", func(ctx context.Context) error { return r.Pause(ctx, in.ID) }},
		{"Restore", func(ctx context.Context) error { _, err := r.Restore(ctx, snap, RestoreOptions{}); return err }},
	})
}

func TestErrUnavailableEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	in := mustStart(t, r, Spec{ID: "wedged", Kernel: haltGuest(t, "wedged"), Firecracker: fc, MemoryMiB: 32})
	defer r.Remove(context.Background(), in.ID, true)
	// A stopped VMM answers nothing on its API.
	if err := syscall.Kill(in.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(in.PID, syscall.SIGCONT)
	short := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 300*time.Millisecond)
	}
	checkAll(t, ErrUnavailable, []errCase{
		{"Pause", func(ctx context.Context) error { ctx, c := short(ctx); defer c(); return r.Pause(ctx, in.ID) }},
		{"Resume", func(ctx context.Context) error { ctx, c := short(ctx); defer c(); return r.Resume(ctx, in.ID) }},
		{"Threads", func(ctx context.Context) error {
			ctx, c := short(ctx)
			defer c()
			_, err := r.Threads(ctx, in.ID)
			return err
		}},
	})
}

// A release that cannot do what a restore needs (taps of its own for the
// restored sandbox need Firecracker 1.12): the error comes from the
// monitor's start report and still matches ErrNotSupported.
func TestErrNotSupportedEveryEntryPoint(t *testing.T) {
	requireNet(t)
	t.Setenv("FAKEFC", `{"version":"1.7.0"}`)
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in := mustStart(t, r, Spec{ID: "old", Kernel: haltGuest(t, "old"), Firecracker: fc, MemoryMiB: 32, Net: []Net{{Auto: true}}})
	defer r.Remove(ctx, in.ID, true)
	snap := t.TempDir()
	if _, err := r.Snapshot(ctx, in.ID, snap, SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	checkAll(t, ErrNotSupported, []errCase{
		{"Restore", func(ctx context.Context) error {
			_, err := r.Restore(ctx, snap, RestoreOptions{ID: "copy", Net: []Net{{Auto: true}}, Firecracker: fc})
			return err
		}},
	})
	if _, err := r.Inspect(ctx, "copy"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused restore left its sandbox: %v", err)
	}
}
