package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/vmm"
)

// hostileScript writes an executable shell script that, if anything runs
// it, leaves the file it returns behind.
func hostileScript(t *testing.T) (script, marker string) {
	t.Helper()
	dir := t.TempDir()
	marker = filepath.Join(dir, "ran")
	script = filepath.Join(dir, "firecracker-evil.sh")
	body := fmt.Sprintf("#!/bin/sh\necho ran > %s\necho Firecracker v1.14.2\n", marker)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, marker
}

func assertNotRun(t *testing.T, marker string) {
	t.Helper()
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program the file on disk named was run")
	}
}

// editJSON rewrites the JSON file path through edit, on a generic map.
func editJSON(t *testing.T, path string, edit func(m map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// idleSnapshot starts an idle sandbox id and snapshots it into a new
// directory, which it returns; opts tune the snapshot.
func idleSnapshot(t *testing.T, r *Runtime, fc, id string, o SnapshotOptions) string {
	t.Helper()
	in := mustStart(t, r, Spec{ID: id, Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32})
	t.Cleanup(func() { r.Remove(context.Background(), in.ID, true) })
	snap := filepath.Join(testutil.ShortTempDir(t), "snap")
	if _, err := r.Snapshot(context.Background(), in.ID, snap, o); err != nil {
		t.Fatal(err)
	}
	return snap
}

// D1: a snapshot manifest names the executable (and jailer) to run; the
// restore must run the caller's, and never the manifest's.
func TestD1SnapshotCannotChooseExecutable(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	snap := idleSnapshot(t, r, fc, "src", SnapshotOptions{})
	script, marker := hostileScript(t)
	editJSON(t, filepath.Join(snap, manifestName), func(m map[string]any) {
		m["spec"].(map[string]any)["firecracker"] = script
		m["snapshot"].(map[string]any)["config"].(map[string]any)["firecracker"] = script
	})

	in, err := r.Restore(ctx, snap, RestoreOptions{ID: "copy", Firecracker: fc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, in.ID, true)
	assertNotRun(t, marker)
	if in.Spec.Firecracker != fc {
		t.Errorf("restored sandbox runs %s, want the caller's %s", in.Spec.Firecracker, fc)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", in.PID))
	if err != nil {
		t.Fatal(err)
	}
	if exe != fc {
		t.Errorf("VMM process runs %s, want %s", exe, fc)
	}

	t.Run("jailer", func(t *testing.T) {
		editJSON(t, filepath.Join(snap, manifestName), func(m map[string]any) {
			m["spec"].(map[string]any)["jailer"] = script
		})
		_, err := r.Restore(ctx, snap, RestoreOptions{ID: "jailed", Firecracker: fc})
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "restore it under the jailer") {
			t.Fatalf("restore of a manifest naming a jailer: %v, want a refusal asking for the caller's jailer", err)
		}
		assertNotRun(t, marker)
	})
}

// D1: the caller's executable is compared with the release the snapshot
// records before anything is recorded or spawned.
func TestD1SnapshotReleaseMustMatch(t *testing.T) {
	r, fc := newRuntime(t, false)
	snap := idleSnapshot(t, r, fc, "src", SnapshotOptions{})
	other := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(other, []byte("#!/bin/sh\necho Firecracker v0.99.0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := r.Restore(context.Background(), snap, RestoreOptions{ID: "copy", Firecracker: other})
	if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "cannot be loaded by 0.99.0") {
		t.Fatalf("restore with another release: %v, want a release mismatch", err)
	}
	if _, err := r.Inspect(context.Background(), "copy"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused restore left a sandbox: %v", err)
	}
}

// D2: a state file naming another executable than the caller configured
// is not started (here another runtime, as another CLI process, on the
// same root, configured with the fake).
func TestD2StateCannotChooseExecutable(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "web", Firecracker: fc}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	script, marker := hostileScript(t)
	editJSON(t, filepath.Join(in.Dir, "state.json"), func(m map[string]any) {
		m["data"].(map[string]any)["spec"].(map[string]any)["firecracker"] = script
	})
	other, err := Open(r.Root())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvFirecracker, fc)
	_, err = other.Start(ctx, "web")
	if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "not the one configured") {
		t.Fatalf("start of a record naming a script: %v, want a refusal", err)
	}
	assertNotRun(t, marker)
	if err := other.Remove(ctx, "web", true); err != nil {
		t.Fatal(err)
	}
}

// D13: a snapshot directory names its own files relative to itself: a
// moved one restores its own files, and a manifest naming a file outside
// the directory is refused.
func TestD13SnapshotRelocatable(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	snap := idleSnapshot(t, r, fc, "src", SnapshotOptions{Own: true})
	b, err := os.ReadFile(filepath.Join(snap, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"snapshot_path": "/`) || strings.Contains(string(b), `"kernel": "`+snap) {
		t.Fatalf("manifest names its own files absolutely:\n%s", b)
	}
	moved := filepath.Join(testutil.ShortTempDir(t), "moved")
	if err := os.Rename(snap, moved); err != nil {
		t.Fatal(err)
	}
	info, err := ReadSnapshot(moved)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kernel != filepath.Join(moved, ownKernelName) {
		t.Errorf("moved snapshot's kernel is %s, want its own copy in %s", info.Kernel, moved)
	}
	in, err := r.Restore(ctx, moved, RestoreOptions{ID: "copy", Firecracker: fc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, in.ID, true)
	if in.Status != Running || in.Kernel != filepath.Join(moved, ownKernelName) {
		t.Errorf("restored from the moved snapshot: %s, kernel %s", in.Status, in.Kernel)
	}
}

func TestD13ManifestOutsideRefused(t *testing.T) {
	r, fc := newRuntime(t, false)
	snap := idleSnapshot(t, r, fc, "src", SnapshotOptions{})
	orig, err := os.ReadFile(filepath.Join(snap, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		field string
		value string
	}{
		{"state absolute", "snapshot_path", "/etc/passwd"},
		{"memory climbs out", "mem_path", "../../etc/shadow"},
		{"kernel climbs out", "kernel", "../x/vmlinux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(snap, manifestName), orig, 0o600); err != nil {
				t.Fatal(err)
			}
			editJSON(t, filepath.Join(snap, manifestName), func(m map[string]any) {
				if tc.field == "kernel" {
					m["kernel"] = tc.value
					return
				}
				m["snapshot"].(map[string]any)[tc.field] = tc.value
			})
			_, err := r.Restore(context.Background(), snap, RestoreOptions{ID: "copy", Firecracker: fc})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "outside the snapshot directory") {
				t.Fatalf("restore: %v, want a manifest naming a file outside refused as corrupt", err)
			}
		})
	}
}

// D11: every file kindling reads is read with a limit.
func TestD11FilesReadWithLimit(t *testing.T) {
	t.Run("config /dev/zero", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { _, err := LoadSpecFile("/dev/zero"); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, store.ErrTooLarge) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("LoadSpecFile(/dev/zero) = %v, want a one-line too-large error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("LoadSpecFile(/dev/zero) does not end")
		}
	})
	t.Run("manifest", func(t *testing.T) {
		dir := t.TempDir()
		f, err := os.Create(filepath.Join(dir, manifestName))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(store.MaxManifestSize + 1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := ReadSnapshot(dir); !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrTooLarge) {
			t.Fatalf("ReadSnapshot of a huge manifest: %v, want ErrCorrupt", err)
		}
	})
}

// The smaller defects of the audit.
func TestSmallerSpecRules(t *testing.T) {
	dir := t.TempDir()
	cfg := func(body string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ body, want string }{
		{"cpus = 0\n", "cpus = 0: give 1 or more"},
		{"cpus = -2\n", "cpus = -2"},
		{`name = ""` + "\n", "name is empty"},
	} {
		if _, err := LoadSpecFile(cfg(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v, want %q", tc.body, err, tc.want)
		}
	}
	if _, err := ParseDisk(filepath.Join(dir, "disk.img:rx")); err == nil || !strings.Contains(err.Error(), `unknown access mode ":rx"`) {
		t.Errorf("disk.img:rx: %v, want the bad suffix named", err)
	}
	// A file that really ends so is taken.
	odd := filepath.Join(dir, "disk.img:rx")
	if err := os.WriteFile(odd, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := ParseDisk(odd); err != nil || d.Path != odd {
		t.Errorf("existing disk.img:rx: %+v, %v", d, err)
	}
}

func TestSmallerSameFileRootfsAndDrive(t *testing.T) {
	r, fc := newRuntime(t, false)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	link := img + ".link"
	if err := os.Link(img, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		drive  Disk
		refuse bool
	}{
		{"same path", Disk{Path: img}, true},
		{"hard link", Disk{Path: link}, true},
		{"both read-only", Disk{Path: img, ReadOnly: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{ID: "d", Firecracker: fc, Rootfs: &Disk{Path: img, ReadOnly: !tc.refuse}, Drives: []Disk{tc.drive}}
			in, err := r.Create(context.Background(), spec, CreateOptions{})
			if tc.refuse {
				if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "given twice") {
					t.Fatalf("create: %v, want the file given twice refused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r.Remove(context.Background(), in.ID, true)
		})
	}
}

// D3: a snapshot is written only into a new directory, or an empty one
// private to the caller: never through a planted symlink, never into a
// directory others can write.
func TestD3SnapshotTargetMustBeNewOrPrivate(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in := mustStart(t, r, Spec{ID: "src", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32})
	defer r.Remove(ctx, in.ID, true)
	base := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")

	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(base, "planted")
	if err := os.Mkdir(planted, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(planted, "snapshot.mem")); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(base, "linked")
	if err := os.Symlink(t.TempDir(), linked); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir, want string }{
		{"world-writable", shared, "chmod go-w"},
		{"holds a dangling symlink", planted, "is not empty"},
		{"is a symlink", linked, "symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Snapshot(ctx, in.ID, tc.dir, SnapshotOptions{})
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("snapshot into %s: %v, want a refusal saying %q", tc.dir, err, tc.want)
			}
			if _, err := os.Lstat(victim); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the symlink's target was written: %v", err)
			}
		})
	}
	t.Run("owned by nobody", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: it makes a directory owned by uid 65534")
		}
		theirs := filepath.Join(base, "theirs")
		if err := os.Mkdir(theirs, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Snapshot(ctx, in.ID, theirs, SnapshotOptions{}); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("snapshot into another user's directory: %v", err)
		}
	})
	t.Run("new directory", func(t *testing.T) {
		if _, err := r.Snapshot(ctx, in.ID, filepath.Join(base, "new", "snap"), SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// D14: ps and inspect show the directory's name as the ID, and flag a
// state file that says another.
func TestD14IDIsTheDirectoryName(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "web", Firecracker: fc}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, "web", true)
	b, err := os.ReadFile(filepath.Join(in.Dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	copyDir := filepath.Join(r.Root(), "copy")
	if err := os.Mkdir(copyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(copyDir, "state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, "copy", true)
	got, err := r.Inspect(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "copy" || got.RecordID != "web" || got.Dir != copyDir {
		t.Errorf("inspect copy: ID %q, RecordID %q, Dir %s; want copy, web, %s", got.ID, got.RecordID, got.Dir, copyDir)
	}
	list, err := r.List(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range list {
		ids = append(ids, in.ID+"/"+in.RecordID)
	}
	if strings.Join(ids, " ") != "copy/web web/" {
		t.Errorf("list: %v, want copy (flagged) and web", ids)
	}
}

// D3: links planted at the paths the VMM opens by name — its log, its API
// and vsock sockets — are not written through.
func TestD3VMMFilesNotThroughSymlinks(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "web", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32, VsockCID: 3}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, "web", true)
	victims := t.TempDir()
	logVictim := filepath.Join(victims, "log")
	if err := os.WriteFile(logVictim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(logVictim, filepath.Join(in.Dir, fcLogName)); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = r.Start(sctx, "web")
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("start with a symlinked log: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(logVictim); string(b) != "precious\n" {
		t.Errorf("the log's link target was written: %q", b)
	}
	// Without the log link, the socket links are refused, not followed.
	if err := os.Remove(filepath.Join(in.Dir, fcLogName)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{apiSocketName, vsockName} {
		if err := os.Symlink(filepath.Join(victims, name), filepath.Join(in.Dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Start(sctx, "web"); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("start with symlinked sockets: %v, want a refusal", err)
	}
	for _, name := range []string{apiSocketName, vsockName} {
		if _, err := os.Lstat(filepath.Join(victims, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a socket was made through the link %s: %v", name, err)
		}
	}
}

// D13: a snapshot that owns copies of the sandbox's writable drives and
// hotplug placeholders restores from wherever its directory is moved,
// once the sandbox it was taken from and its files are gone: Firecracker
// opens the drives a snapshot records while loading it, so the snapshot
// must not record the old directory's paths.
func TestD13MovedSnapshotWithDrivesRestores(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	src := testutil.ShortTempDir(t)
	data := filepath.Join(src, "data.img")
	if err := os.WriteFile(data, []byte("source data"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := mustStart(t, r, Spec{ID: "src", Firecracker: fc, Demo: DemoIdle, MemoryMiB: 32,
		Drives: []Disk{{Path: data}}, Placeholders: 1, HotplugWritable: true})
	snap := filepath.Join(testutil.ShortTempDir(t), "snap")
	if _, err := r.Snapshot(ctx, in.ID, snap, SnapshotOptions{Own: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, in.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(data); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(snap, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), snap) {
		t.Fatalf("manifest names its directory %s:\n%s", snap, b)
	}
	moved := filepath.Join(testutil.ShortTempDir(t), "moved")
	if err := os.Rename(snap, moved); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    RestoreOptions
		want string // the directory of the drive the restored VM uses
	}{
		{"in place", RestoreOptions{ID: "inplace", Firecracker: fc}, moved},
		{"copies", RestoreOptions{ID: "copies", Firecracker: fc, CopyOwnedDrives: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Restore(ctx, moved, tc.o)
			if err != nil {
				t.Fatalf("restore from the moved snapshot: %v", err)
			}
			defer r.Remove(ctx, got.ID, true)
			if got.Status != Running {
				t.Fatalf("restored sandbox is %s", got.Status)
			}
			want := tc.want
			if want == "" {
				want = got.Dir // not jailed: the copies are in the sandbox's directory
			}
			if len(got.Spec.Drives) != 1 || filepath.Dir(got.Spec.Drives[0].Path) != want {
				t.Errorf("restored sandbox's drives: %+v, want one in %s", got.Spec.Drives, want)
			}
			if b, err := os.ReadFile(got.Spec.Drives[0].Path); err != nil || string(b) != "source data" {
				t.Errorf("restored drive holds %q (%v), want the source's content", b, err)
			}
			// The links a restore makes for Firecracker's load are gone.
			ents, err := os.ReadDir(got.Dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Type()&os.ModeSymlink != 0 || e.Name() == vmm.RestoreLinkDir {
					t.Errorf("restored sandbox's directory keeps %s", e.Name())
				}
			}
			// The restored VMM names its drives by their files, not by
			// the links it loaded them through: a snapshot of it that
			// owns nothing records those files.
			again := filepath.Join(testutil.ShortTempDir(t), "again")
			if _, err := r.Snapshot(ctx, got.ID, again, SnapshotOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{manifestName, vmm.SnapshotStateFile} {
				if b, err := os.ReadFile(filepath.Join(again, f)); err != nil || strings.Contains(string(b), vmm.RestoreLinkDir) {
					t.Errorf("%s of a snapshot of the restored sandbox names the restore's links (%v):\n%s", f, err, b)
				}
			}
		})
	}
}
