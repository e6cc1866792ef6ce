package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/fakefc"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

func backendName(real bool) string { return map[bool]string{false: "fake", true: "real"}[real] }

// templateSource starts a sandbox with a writable data drive, a read-only
// drive and a hotplug slot, to make templates of. It returns its spec.
func templateSource(t *testing.T, r *rig, fc, id string) sandbox.Spec {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	data, ro := filepath.Join(dir, "data.img"), filepath.Join(dir, "ro.img")
	for _, p := range []string{data, ro} {
		if err := os.WriteFile(p, []byte("drive "+filepath.Base(p)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 4<<20); err != nil { // sparse tail
			t.Fatal(err)
		}
	}
	spec := sandbox.Spec{ID: id, Kernel: haltGuest(t, "template guest up"), Firecracker: fc, MemoryMiB: 64, Placeholders: 1,
		Drives: []sandbox.Disk{{Path: data}, {Path: ro, ReadOnly: true}}}
	ctx := context.Background()
	if _, err := r.rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err := r.rt.Start(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	waitConsole(t, in, "template guest up")
	return spec
}

// assertTemplatesEmpty fails the test if the template store holds anything.
func assertTemplatesEmpty(t *testing.T, r *rig) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.Root(), templatesDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("template store holds %s after the test", e.Name())
	}
}

// removeAll removes sandboxes ids (killing them), all at once.
func removeAll(t *testing.T, r *rig, ids ...string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if err := r.rt.Remove(context.Background(), id, true); err != nil {
				t.Errorf("remove %s: %v", id, err)
			}
		})
	}
	wg.Wait()
}

func TestTemplateClones(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(backendName(real), func(t *testing.T) { testTemplateClones(t, real) })
	}
}

func testTemplateClones(t *testing.T, real bool) {
	r, fc := newRuntime(t, real)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")

	began := time.Now()
	tpl, err := r.tpl.Create(ctx, "tpl", "src", Options{})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	t.Logf("template of a %d MiB guest made in %v", spec.MemoryMiB, time.Since(began))
	defer func() {
		if err := r.tpl.Remove(context.Background(), "tpl", false); err != nil {
			t.Errorf("RemoveTemplate: %v", err)
		}
	}()
	if in, err := r.rt.Inspect(ctx, "src"); err != nil || in.Status != sandbox.Running {
		t.Fatalf("source after template: %v, %v; want running", in.Status, err)
	}
	checkManifest(t, tpl, spec)

	const n = 20
	ids := make([]string, n)
	took := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("clone%02d", i)
		wg.Go(func() {
			b := time.Now()
			_, errs[i] = r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: ids[i]})
			took[i] = time.Since(b)
		})
	}
	wg.Wait()
	defer removeAll(t, r, ids...)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("RunTemplate: %v", err)
	}
	slices.Sort(took)
	t.Logf("%d clones started at once: median %v, max %v", n, took[n/2], took[n-1])

	for _, id := range ids {
		in, err := r.rt.Inspect(ctx, id)
		if err != nil || in.Status != sandbox.Running {
			t.Fatalf("clone %s: %v, %v; want running", id, in.Status, err)
		}
		own := filepath.Join(in.Dir, "drive-drive0.img")
		if in.Spec.Drives[0].Path != own || in.Spec.Drives[1].Path != spec.Drives[1].Path {
			t.Errorf("clone %s drives %+v, want its own copy %s and the shared read-only drive", id, in.Spec.Drives, own)
		}
		if b, err := os.ReadFile(own); err != nil || !strings.HasPrefix(string(b), "drive data.img") || len(b) != 4<<20 {
			t.Errorf("clone %s drive copy: %d bytes, %v", id, len(b), err)
		}
		assertVMMDrive(t, in, "drive0", own, tpl.Drives)
	}
	if real {
		logSharing(t, r, ids[0], ids[1])
	}

	t.Run("clones are independent", func(t *testing.T) {
		if err := r.rt.Pause(ctx, ids[0]); err != nil {
			t.Fatal(err)
		}
		for i, id := range ids[:3] {
			want := sandbox.Running
			if i == 0 {
				want = sandbox.Paused
			}
			if in, err := r.rt.Inspect(ctx, id); err != nil || in.Status != want {
				t.Errorf("clone %s: %v, %v; want %s", id, in.Status, err, want)
			}
		}
		if err := r.rt.Resume(ctx, ids[0]); err != nil {
			t.Fatal(err)
		}
		if err := r.rt.Stop(ctx, ids[1]); err != nil {
			t.Fatal(err)
		}
		if in, err := r.rt.Inspect(ctx, ids[2]); err != nil || in.Status != sandbox.Running {
			t.Errorf("clone %s after another stopped: %v, %v", ids[2], in.Status, err)
		}
	})
	t.Run("list and inspect", func(t *testing.T) {
		list, err := r.tpl.List(ctx)
		if err != nil || len(list) != 1 || list[0].Name != "tpl" || len(list[0].Clones) != n {
			t.Fatalf("ListTemplates: %+v, %v; want tpl with %d clones", list, err, n)
		}
		got, err := r.tpl.Inspect(ctx, "tpl")
		if err != nil || !slices.Equal(got.Clones, ids) {
			t.Fatalf("InspectTemplate: clones %v, %v", got.Clones, err)
		}
		if err := r.tpl.Verify(ctx, "tpl"); err != nil {
			t.Errorf("VerifyTemplate: %v", err)
		}
	})
	t.Run("rm of a template in use", func(t *testing.T) {
		err := r.tpl.Remove(ctx, "tpl", false)
		if !errors.Is(err, sandbox.ErrInvalidState) || !strings.Contains(err.Error(), "clone00") {
			t.Fatalf("RemoveTemplate: %v, want sandbox.ErrInvalidState naming the clones", err)
		}
		if _, err := r.tpl.Inspect(ctx, "tpl"); err != nil {
			t.Fatalf("template gone after a refused rm: %v", err)
		}
	})
	t.Run("source goes on", func(t *testing.T) {
		if in, err := r.rt.Inspect(ctx, "src"); err != nil || in.Status != sandbox.Running || in.Spec.Drives[0].Path != spec.Drives[0].Path {
			t.Fatalf("source: %+v, %v", in, err)
		}
	})
}

// checkManifest checks what CreateTemplate recorded.
func checkManifest(t *testing.T, tpl Template, spec sandbox.Spec) {
	t.Helper()
	if tpl.Firecracker == "" || tpl.MemoryMiB != spec.MemoryMiB || tpl.From != "src" {
		t.Errorf("template %+v", tpl)
	}
	files := map[string]File{}
	for _, f := range tpl.Files {
		files[f.Name] = f
	}
	for _, name := range []string{vmm.SnapshotStateFile, vmm.SnapshotMemFile, "drive-drive0.img", "pool0.img", "kernel"} {
		if f, ok := files[name]; !ok || len(f.SHA256) != 64 {
			t.Errorf("manifest has no checksum of %s: %+v", name, tpl.Files)
		}
	}
	if m := files[vmm.SnapshotMemFile]; m.Stamp.Size != int64(spec.MemoryMiB)<<20 {
		t.Errorf("memory file is %d bytes", m.Stamp.Size)
	}
	want := []Drive{
		{ID: "drive0", Path: filepath.Join(tpl.Dir, "drive-drive0.img"), Copied: true},
		{ID: "drive1", Path: spec.Drives[1].Path, ReadOnly: true},
	}
	if !slices.Equal(tpl.Drives, want) {
		t.Errorf("template drives %+v, want %+v", tpl.Drives, want)
	}
}

// assertVMMDrive checks, through the clone's API, that its VMM has drive id
// at want (where the release reports its drives), and for a real
// Firecracker that it holds no template drive open.
func assertVMMDrive(t *testing.T, in sandbox.Info, id, want string, tplDrives []Drive) {
	t.Helper()
	c, err := fcapi.New(in.APISocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	vc, err := c.GetVMConfig(context.Background())
	if err != nil {
		t.Fatalf("GET /vm/config of %s: %v", in.ID, err)
	}
	for _, d := range vc.Drives {
		if d.DriveID == id && d.PathOnHost != want {
			t.Errorf("clone %s: VMM has drive %s at %s, want %s", in.ID, id, d.PathOnHost, want)
		}
	}
	fdDir := filepath.Join("/proc", strconv.Itoa(in.PID), "fd")
	fds, _ := os.ReadDir(fdDir)
	for _, fd := range fds {
		l, _ := os.Readlink(filepath.Join(fdDir, fd.Name()))
		for _, d := range tplDrives {
			if d.Copied && l == d.Path {
				t.Errorf("clone %s holds the template's drive %s open", in.ID, l)
			}
		}
	}
}

// logSharing logs how two clones map the template's memory file: private
// file mappings share the page cache pages until a clone writes to one.
func logSharing(t *testing.T, r *rig, ids ...string) {
	t.Helper()
	for _, id := range ids {
		in, err := r.rt.Inspect(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(in.PID), "smaps"))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for block := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(block, vmm.SnapshotMemFile) {
				found = true
				t.Logf("clone %s maps: %s", id, strings.TrimSpace(block))
				fields := strings.Fields(block)
				if len(fields) > 1 && !strings.HasSuffix(fields[1], "p") {
					t.Errorf("clone %s maps the memory file %s, want a private (copy-on-write) mapping", id, fields[1])
				}
			}
		}
		if !found {
			t.Errorf("clone %s does not map %s", id, vmm.SnapshotMemFile)
		}
		rollup, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(in.PID), "smaps_rollup"))
		t.Logf("clone %s smaps_rollup:\n%s", id, rollup)
	}
}

func TestTemplateRefusals(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(backendName(real), func(t *testing.T) { testTemplateRefusals(t, real) })
	}
}

func testTemplateRefusals(t *testing.T, real bool) {
	r, fc := newRuntime(t, real)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")

	mk := func(t *testing.T, name string) Template {
		t.Helper()
		tpl, err := r.tpl.Create(ctx, name, "src", Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.tpl.Remove(context.Background(), name, false); err != nil {
				t.Errorf("RemoveTemplate: %v", err)
			}
		})
		return tpl
	}
	// refused checks that a clone is refused with want and leaves nothing.
	refused := func(t *testing.T, name string, o CloneOptions, want error) {
		t.Helper()
		o.ID = "clone"
		_, err := r.tpl.Run(ctx, name, o)
		if !errors.Is(err, want) {
			t.Fatalf("RunTemplate: %v, want %v", err, want)
		}
		t.Logf("refused: %v", err)
		if list, _ := r.rt.List(ctx, sandbox.ListOptions{}); len(list) != 1 {
			t.Errorf("sandboxes after a refused clone: %d, want only the source", len(list))
		}
		if _, err := os.Stat(filepath.Join(r.Root(), "clone")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the refused clone left its directory: %v", err)
		}
	}

	t.Run("bad names", func(t *testing.T) {
		if _, err := r.tpl.Create(ctx, "../x", "src", Options{}); !errors.Is(err, sandbox.ErrInvalidSpec) {
			t.Errorf("CreateTemplate ../x: %v, want sandbox.ErrInvalidSpec", err)
		}
		if _, err := r.tpl.Create(ctx, "t", "nope", Options{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("CreateTemplate from a missing sandbox: %v, want ErrNotFound", err)
		}
		if _, err := r.tpl.Run(ctx, "nope", CloneOptions{Firecracker: r.fc}); !errors.Is(err, ErrNotFound) {
			t.Errorf("RunTemplate nope: %v, want ErrNotFound", err)
		}
		if err := r.tpl.Remove(ctx, "nope", false); !errors.Is(err, ErrNotFound) {
			t.Errorf("RemoveTemplate nope: %v, want ErrNotFound", err)
		}
		assertTemplatesEmpty(t, r)
	})
	t.Run("name taken", func(t *testing.T) {
		mk(t, "taken")
		if _, err := r.tpl.Create(ctx, "taken", "src", Options{}); !errors.Is(err, ErrExists) {
			t.Fatalf("second CreateTemplate: %v, want ErrExists", err)
		}
		if _, err := r.tpl.Inspect(ctx, "taken"); err != nil {
			t.Fatalf("the first template is gone: %v", err)
		}
	})
	t.Run("other release", func(t *testing.T) {
		tpl := mk(t, "rel")
		other := "1.7.0"
		if strings.HasPrefix(tpl.Firecracker, "1.7.") {
			other = "1.14.2"
		}
		// A clone run by another executable, the fake emulating 1.7.0: it
		// is asked its release and refused before anything is spawned.
		exe := filepath.Join(testutil.ShortTempDir(t), "firecracker")
		b, err := os.ReadFile(testutil.FakeFirecracker(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(exe, b, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("FAKEFC", `{"version":"`+other+`"}`)
		refused(t, "rel", CloneOptions{Firecracker: exe}, sandbox.ErrInvalidSpec)
	})
	t.Run("corrupted memory file", func(t *testing.T) {
		tpl := mk(t, "bad")
		mem := filepath.Join(tpl.Dir, vmm.SnapshotMemFile)
		fi, err := os.Stat(mem)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(mem, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("corrupt"), 1<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		refused(t, "bad", CloneOptions{Firecracker: r.fc}, ErrCorrupt)
		// Hide the change from the cheap check: Verify still finds it.
		if err := os.Chtimes(mem, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		refused(t, "bad", CloneOptions{Firecracker: r.fc, Verify: true}, ErrCorrupt)
		if err := r.tpl.Verify(ctx, "bad"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("VerifyTemplate: %v, want ErrCorrupt", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		tpl := mk(t, "gone")
		if err := os.Remove(filepath.Join(tpl.Dir, "drive-drive0.img")); err != nil {
			t.Fatal(err)
		}
		refused(t, "gone", CloneOptions{Firecracker: r.fc}, ErrCorrupt)
	})
	t.Run("wrong number of interfaces", func(t *testing.T) {
		mk(t, "nets")
		refused(t, "nets", CloneOptions{Firecracker: r.fc, Net: []sandbox.Net{{Auto: true}}}, sandbox.ErrInvalidSpec)
	})
	t.Run("stopped source", func(t *testing.T) {
		in, err := r.rt.Create(ctx, sandbox.Spec{ID: "idle", Kernel: haltGuest(t, "idle"), Firecracker: fc}, sandbox.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer removeAll(t, r, in.ID)
		if _, err := r.tpl.Create(ctx, "idle", "idle", Options{}); !errors.Is(err, sandbox.ErrInvalidState) {
			t.Fatalf("template of a created sandbox: %v, want sandbox.ErrInvalidState", err)
		}
		if _, err := os.Stat(filepath.Join(r.Root(), templatesDir, "idle")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused template left its directory: %v", err)
		}
	})
}

// TestTemplateOtherReleaseSameExecutable: the fake, as the very executable
// the template was made with, emulating another release for the clone.
func TestTemplateOtherReleaseSameExecutable(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx := context.Background()
	templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")
	if _, err := r.tpl.Create(ctx, "tpl", "src", Options{}); err != nil {
		t.Fatal(err)
	}
	defer r.tpl.Remove(ctx, "tpl", false)
	t.Setenv("FAKEFC", `{"version":"1.7.0"}`)
	_, err := r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: "clone"})
	if err == nil || !strings.Contains(err.Error(), "written by Firecracker "+fakefc.DefaultVersion.String()) {
		t.Fatalf("RunTemplate: %v, want a release mismatch", err)
	}
	if list, _ := r.rt.List(ctx, sandbox.ListOptions{}); len(list) != 1 {
		t.Errorf("sandboxes after a refused clone: %d, want only the source", len(list))
	}
}

// TestTemplateStop: with Stop the source is stopped once the template is
// made, and clones run without it.
func TestTemplateStop(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(backendName(real), func(t *testing.T) {
			r, fc := newRuntime(t, real)
			t.Cleanup(func() { assertTemplatesEmpty(t, r) })
			ctx := context.Background()
			spec := templateSource(t, r, fc, "src")
			const img = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			if tpl, err := r.tpl.Create(ctx, "tpl", "src", Options{Stop: true, Image: img}); err != nil {
				t.Fatal(err)
			} else if got, err := r.tpl.Inspect(ctx, "tpl"); err != nil || got.Image != img || tpl.Image != img {
				t.Fatalf("the template records image %q (read back %q, %v), want %q", tpl.Image, got.Image, err, img)
			}
			if in, err := r.rt.Inspect(ctx, "src"); err != nil || in.Status != sandbox.Exited {
				t.Fatalf("source: %v, %v; want exited", in.Status, err)
			}
			// The template owns everything it needs: the source and its
			// writable drive can go.
			removeAll(t, r, "src")
			if err := os.Remove(spec.Drives[0].Path); err != nil {
				t.Fatal(err)
			}
			if _, err := r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: "clone", AutoRemove: true}); err != nil {
				t.Fatalf("RunTemplate: %v", err)
			}
			if err := r.rt.Stop(ctx, "clone"); err != nil {
				t.Fatal(err)
			}
			if err := r.tpl.Remove(ctx, "tpl", false); err != nil {
				t.Fatalf("RemoveTemplate after the clone auto-removed: %v", err)
			}
		})
	}
}

// TestTemplateNetAndVsock: clones of a template with a tap get taps of
// their own where the release can override them (≥ 1.12), and are refused
// clearly before; clones of a template with a vsock device get a socket of
// their own on every release.
func TestTemplateNetAndVsock(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(backendName(real), func(t *testing.T) {
			requireNet(t)
			r, fc := newRuntime(t, real)
			t.Cleanup(func() { assertTemplatesEmpty(t, r) })
			ctx := context.Background()
			for _, s := range []sandbox.Spec{
				{ID: "net", Net: []sandbox.Net{{Auto: true}}},
				{ID: "vsock", VsockCID: 3},
			} {
				s.Kernel, s.Firecracker = haltGuest(t, "x"), fc
				if _, err := r.rt.Create(ctx, s, sandbox.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				defer removeAll(t, r, s.ID)
				if _, err := r.rt.Start(ctx, s.ID); err != nil {
					t.Fatal(err)
				}
				tpl, err := r.tpl.Create(ctx, s.ID, s.ID, Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer r.tpl.Remove(ctx, s.ID, false)
				ver := fcapi.MustParseVersion(tpl.Firecracker)
				if s.VsockCID != 0 && !tpl.VsockPerClone {
					t.Errorf("template with a vsock device: VsockPerClone unset")
				}
				in, err := r.tpl.Run(ctx, s.ID, CloneOptions{Firecracker: r.fc, ID: s.ID + "-clone", AutoRemove: true})
				if s.VsockCID == 0 && ver.Less(fcapi.FeatureNetworkOverrides.Since()) {
					if !errors.Is(err, ErrNotSupported) {
						t.Fatalf("%s clone on %s: %v, want ErrNotSupported", s.ID, ver, err)
					}
					t.Logf("refused: %v", err)
					continue
				}
				if err != nil {
					t.Fatalf("%s clone: %v", s.ID, err)
				}
				if s.VsockCID == 0 && (len(in.Taps) != 1 || in.Taps[0].Name == tpl.Net[0].Tap) {
					t.Errorf("clone taps %+v, want one of its own (the template's is %s)", in.Taps, tpl.Net[0].Tap)
				}
				if s.VsockCID != 0 && !strings.HasPrefix(in.VsockSocket, in.Dir) {
					t.Errorf("clone vsock socket %s, want one in %s", in.VsockSocket, in.Dir)
				}
				if err := r.rt.Stop(ctx, in.ID); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestTemplateCloneTiming measures, one at a time, how long RunTemplate
// takes to return a running clone, and Restore of a plain snapshot of the
// same sandbox. It logs the medians; it fails on no number.
func TestTemplateCloneTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement: skipped with -short")
	}
	for _, real := range []bool{false, true} {
		t.Run(backendName(real), func(t *testing.T) {
			r, fc := newRuntime(t, real)
			t.Cleanup(func() { assertTemplatesEmpty(t, r) })
			ctx := context.Background()
			templateSource(t, r, fc, "src")
			defer removeAll(t, r, "src")
			if _, err := r.tpl.Create(ctx, "tpl", "src", Options{}); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := r.tpl.Remove(ctx, "tpl", false); err != nil {
					t.Error(err)
				}
			}()
			snapDir := filepath.Join(testutil.ShortTempDir(t), "snap")
			if _, err := r.rt.Snapshot(ctx, "src", snapDir, sandbox.SnapshotOptions{}); err != nil {
				t.Fatal(err)
			}
			const n = 20
			var ids []string
			defer func() { removeAll(t, r, ids...) }()
			measure := func(start func(id string) (sandbox.Info, error), prefix string) time.Duration {
				took := make([]time.Duration, n)
				for i := range n {
					id := fmt.Sprintf("%s%02d", prefix, i)
					b := time.Now()
					in, err := start(id)
					took[i] = time.Since(b)
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
					if in.Status != sandbox.Running {
						t.Fatalf("%s: %s", id, in.Status)
					}
				}
				slices.Sort(took)
				return took[n/2]
			}
			clone := measure(func(id string) (sandbox.Info, error) {
				return r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: id})
			}, "c")
			verified := measure(func(id string) (sandbox.Info, error) {
				return r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: id, Verify: true})
			}, "v")
			restore := measure(func(id string) (sandbox.Info, error) {
				return r.rt.Restore(ctx, snapDir, sandbox.RestoreOptions{ID: id, Firecracker: r.fc})
			}, "r")
			t.Logf("median of %d, one at a time: clone %v, clone with Verify %v, plain restore %v", n, clone, verified, restore)
		})
	}
}

// D1: a template manifest names the executable it was made with; a clone
// runs the caller's (here the default, $KINDLING_FIRECRACKER), never the
// manifest's.
func TestD1TemplateCannotChooseExecutable(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx := context.Background()
	templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")
	tpl, err := r.tpl.Create(ctx, "tpl", "src", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.tpl.Remove(ctx, "tpl", false)
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	script := filepath.Join(dir, "firecracker")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho ran > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tpl.Dir, templateManifestName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `"firecracker_path": "`+fc+`"`, `"firecracker_path": "`+script+`"`, 1)
	if edited == string(b) {
		t.Fatalf("manifest names no firecracker_path %s:\n%s", fc, b)
	}
	b = []byte(edited)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(sandbox.EnvFirecracker, fc)
	in, err := r.tpl.Run(ctx, "tpl", CloneOptions{ID: "clone"})
	if err != nil {
		t.Fatal(err)
	}
	defer removeAll(t, r, in.ID)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the executable the template manifest named was run")
	}
	if in.Spec.Firecracker != fc {
		t.Errorf("clone runs %s, want the configured %s", in.Spec.Firecracker, fc)
	}
}

// D2: a template store another user owns is neither written nor read.
func TestD2TemplateStoreOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes a directory owned by uid 65534")
	}
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")
	tdir := filepath.Join(r.Root(), templatesDir)
	if err := os.Mkdir(tdir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tdir)
	if err := os.Chown(tdir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tpl.Create(ctx, "tpl", "src", Options{}); !errors.Is(err, store.ErrNotPrivate) || !strings.Contains(err.Error(), "chown") {
		t.Fatalf("create in another user's template store: %v, want a refusal naming the fix", err)
	}
	if _, err := r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: fc, ID: "clone"}); !errors.Is(err, store.ErrNotPrivate) {
		t.Fatalf("clone from another user's template store: %v", err)
	}
}

// D13: a template manifest naming a file outside its directory is refused.
func TestD13TemplateFileOutsideRefused(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx := context.Background()
	templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")
	tpl, err := r.tpl.Create(ctx, "tpl", "src", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.tpl.Remove(ctx, "tpl", false)
	path := filepath.Join(tpl.Dir, templateManifestName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `"name": "`+vmm.SnapshotStateFile+`"`, `"name": "../../../../etc/shadow"`, 1)
	if edited == string(b) {
		t.Fatalf("manifest names no %s:\n%s", vmm.SnapshotStateFile, b)
	}
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.tpl.Verify(ctx, "tpl"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("verify: %v, want the manifest refused as corrupt", err)
	}
}
