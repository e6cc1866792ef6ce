package template

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// busyboxLayout writes an OCI layout holding a linux/amd64 image made
// here (no network): the host's static busybox as /bin/sh and friends,
// /etc/passwd, and /srv owned by user 1000, the image's user. It returns
// the layout's directory.
func busyboxLayout(t *testing.T) string {
	t.Helper()
	bbPath, err := exec.LookPath("busybox")
	if err != nil {
		bbPath = "/bin/busybox"
	}
	bb, err := os.ReadFile(bbPath)
	if err != nil {
		t.Skipf("skipping: the image needs a static busybox (install busybox-static): %v", err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	add := func(h tar.Header, data []byte) {
		h.ModTime, h.Size = when, int64(len(data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "root/", "proc/", "sys/", "dev/", "run/", "tmp/"} {
		add(tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil)
	}
	add(tar.Header{Typeflag: tar.TypeDir, Name: "srv/", Mode: 0o755, Uid: 1000, Gid: 1000}, nil)
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, bb)
	for _, a := range []string{"sh", "echo", "cat", "ls", "mkdir", "id", "hostname", "true"} {
		add(tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644},
		[]byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/srv:/bin/sh\n"))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte("root:x:0:\nuser:x:1000:\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: when}
	cf.Config = v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}, WorkingDir: "/srv", User: "user"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "bbox:1"})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// imageRig is a template store on the simulated guest of a release with
// vsock overrides, and an image of busybox imported with the real agent.
type imageRig struct {
	*rig
	im   image.Image
	spec sandbox.Spec // boots the image's root filesystem
}

func newImageRig(t *testing.T) *imageRig {
	t.Helper()
	return newImageRigIn(t, "")
}

// newImageRigIn is newImageRig with the state root root (a new temporary
// directory when empty).
func newImageRigIn(t *testing.T, root string) *imageRig {
	t.Helper()
	testutil.NeedSimulatedGuest(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skipf("skipping: building an image needs mkfs.ext4 (install e2fsprogs): %v", err)
	}
	// Clones need a vsock socket of their own, which the template's
	// snapshot gives them on a release without vsock overrides (< 1.16).
	t.Setenv("FAKEFC", `{"version":"1.14.2"}`)
	r, fc := newRuntimeIn(t, false, root)
	// Registered first, so checked last: no simulated guest left a mount
	// or a loop device of a file under the state root.
	t.Cleanup(func() { checkNoSimLeftovers(t, r.Root()) })
	agentBin, err := testutil.AgentBinaryPath()
	if err != nil {
		t.Fatal(err)
	}
	is, err := image.Open(filepath.Join(r.Root(), ".images"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := is.Import(context.Background(), busyboxLayout(t), image.ImportOptions{BuildOptions: image.BuildOptions{Agent: agentBin}})
	if err != nil {
		t.Fatal(err)
	}
	rfs, ok := im.RootFSFor(fileSHA(t, agentBin))
	if !ok {
		t.Fatalf("image %s has no root filesystem with the agent: %+v", im.ID, im.RootFS)
	}
	spec := sandbox.Spec{
		Kernel: haltGuest(t, "not booted: the simulated guest runs init"), Firecracker: fc,
		Rootfs: &sandbox.Disk{Path: rfs.Path}, KernelArgs: image.BootArg,
	}
	return &imageRig{rig: r, im: im, spec: spec}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}

// execOut runs args in sandbox id and returns its exit code and output.
func execOut(t *testing.T, rt *sandbox.Runtime, id string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := rt.Exec(ctx, id, sandbox.ExecRequest{Args: args, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %q in %s: %v", args, id, err)
	}
	defer p.Close()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("exec %q in %s: %v", args, id, err)
	}
	return code, out.String()
}

// TestBuildFromImage builds a template from an image on the simulated
// guest (the fake Firecracker boots the image's ext4 with the real agent
// as init), with setup commands, and starts 20 clones of it at once: each
// sees what the setup wrote, writes a file of its own, and sees none of
// the others' files. On the simulated guest a clone boots the agent afresh
// from its copy of the template's root filesystem (SIMGUEST.md): this
// proves the template's disk state and each clone's own copy, not memory
// state.
func TestBuildFromImage(t *testing.T) {
	r := newImageRig(t)
	ctx := context.Background()
	var shown bytes.Buffer
	tpl, err := r.tpl.Build(ctx, "py", BuildOptions{
		Spec: r.spec, Image: r.im.ID, ImageRef: "bbox:1", Output: &shown,
		Run: []string{
			"echo built-by-$(id -u) > /srv/motd; echo setup output",
			"mkdir -p /srv/data && echo second step",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.tpl.Remove(context.Background(), "py", true); err != nil {
			t.Errorf("remove template: %v", err)
		}
	})
	if tpl.Image != r.im.ID || tpl.ImageRef != "bbox:1" || len(tpl.Setup) != 2 {
		t.Errorf("template records image %q (%q), setup %q", tpl.Image, tpl.ImageRef, tpl.Setup)
	}
	if !strings.Contains(shown.String(), "setup output\n") || !strings.Contains(shown.String(), "second step\n") {
		t.Errorf("the setup commands' output was not shown: %q", shown.String())
	}
	// The builder is gone: only clones will be sandboxes.
	if list, err := r.rt.List(ctx, sandbox.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("sandboxes after the build: %v, %v", list, err)
	}
	got, err := r.tpl.Inspect(ctx, "py")
	if err != nil || got.Image != r.im.ID {
		t.Fatalf("inspect: image %q, %v", got.Image, err)
	}
	// A second build of the name is refused before anything boots.
	if _, err := r.tpl.Build(ctx, "py", BuildOptions{Spec: r.spec}); !errors.Is(err, ErrExists) {
		t.Errorf("a second build of template py: %v, want ErrExists", err)
	}

	const n = 20
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("c%02d", i)
		wg.Go(func() {
			_, errs[i] = r.tpl.Run(ctx, "py", CloneOptions{ID: ids[i], Firecracker: r.fc})
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, id := range ids {
			wg.Go(func() { r.rt.Remove(context.Background(), id, true) })
		}
		wg.Wait()
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// Each clone writes a file named after itself (in parallel), then
	// each lists the directory: only its own file is there.
	codes := make([]int, n)
	outs := make([]string, n)
	for i, id := range ids {
		wg.Go(func() {
			codes[i], outs[i] = execOut(t, r.rt, id, "sh", "-c", "cat /srv/motd && echo "+id+" > /srv/data/"+id+" && hostname")
		})
	}
	wg.Wait()
	for i, id := range ids {
		if codes[i] != 0 || outs[i] != "built-by-1000\n"+id+"\n" {
			t.Errorf("clone %s: exit %d, output %q; want the setup's file and its own hostname", id, codes[i], outs[i])
		}
	}
	for i, id := range ids {
		wg.Go(func() { codes[i], outs[i] = execOut(t, r.rt, id, "sh", "-c", "ls /srv/data; cat /srv/data/*") })
	}
	wg.Wait()
	for i, id := range ids {
		if codes[i] != 0 || outs[i] != id+"\n"+id+"\n" {
			t.Errorf("clone %s sees %q in /srv/data (exit %d): want only its own file", id, outs[i], codes[i])
		}
	}
	// The template's clones are listed; the template's own root
	// filesystem holds none of their files.
	if got, err := r.tpl.Inspect(ctx, "py"); err != nil || !slices.Equal(got.Clones, ids) {
		t.Errorf("clones of the template: %v, %v", got.Clones, err)
	}
	if err := r.tpl.Verify(ctx, "py"); err != nil {
		t.Errorf("the clones changed the template: %v", err)
	}
}

// TestBuildSetupFails: a failing setup command ends the build with its
// exit code and output, and leaves neither template nor builder.
func TestBuildSetupFails(t *testing.T) {
	r := newImageRig(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		run      []string
		output   io.Writer
		step     int
		code     int
		wantText string
	}{
		{name: "exit status", run: []string{"true", "echo to-stdout; echo to-stderr >&2; exit 3"}, step: 2, code: 3, wantText: "to-stderr"},
		{name: "shown output", run: []string{"echo visible; exit 5"}, output: io.Discard, step: 1, code: 5},
		{name: "missing program", run: []string{"no-such-program"}, step: 1, code: 127, wantText: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.tpl.Build(ctx, "bad", BuildOptions{Spec: r.spec, Run: tt.run, Output: tt.output})
			var se *SetupError
			if !errors.As(err, &se) {
				t.Fatalf("build: %v, want a SetupError", err)
			}
			if se.Step != tt.step || se.ExitCode != tt.code || se.Command != tt.run[tt.step-1] {
				t.Errorf("setup error step %d code %d command %q; want step %d code %d", se.Step, se.ExitCode, se.Command, tt.step, tt.code)
			}
			if tt.wantText != "" && (!strings.Contains(string(se.Output), tt.wantText) || !strings.Contains(err.Error(), tt.wantText)) {
				t.Errorf("output %q, error %q: want %q in both", se.Output, err, tt.wantText)
			}
			if tt.output != nil && strings.Contains(err.Error(), "output ends") {
				t.Errorf("the error repeats output shown already: %v", err)
			}
			if _, err := r.tpl.Inspect(ctx, "bad"); !errors.Is(err, ErrNotFound) {
				t.Errorf("template after a failed build: %v", err)
			}
			if _, err := os.Stat(filepath.Join(r.Root(), templatesDir, "bad")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("template directory after a failed build: %v", err)
			}
			if list, err := r.rt.List(ctx, sandbox.ListOptions{}); err != nil || len(list) != 0 {
				t.Errorf("sandboxes after a failed build: %v, %v", list, err)
			}
		})
	}
}

// TestBuildBadInput: bad input is refused before anything is spawned.
func TestBuildBadInput(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Setenv("FAKEFC", `{"version":"1.16.0"}`)
	kernel := haltGuest(t, "x")
	rootfs := filepath.Join(t.TempDir(), "root.ext4")
	if err := os.WriteFile(rootfs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	spec := sandbox.Spec{Kernel: kernel, Firecracker: fc, Rootfs: &sandbox.Disk{Path: rootfs}}
	tests := []struct {
		name    string
		tname   string
		o       BuildOptions
		fakefc  string
		want    error
		wantMsg string
	}{
		{name: "bad name", tname: "../x", o: BuildOptions{Spec: spec}, want: ErrInvalid},
		{name: "no rootfs", tname: "t", o: BuildOptions{Spec: sandbox.Spec{Kernel: kernel, Firecracker: fc}}, want: ErrInvalid, wantMsg: "root filesystem"},
		{name: "read-only rootfs", tname: "t", o: BuildOptions{Spec: sandbox.Spec{Kernel: kernel, Firecracker: fc, Rootfs: &sandbox.Disk{Path: rootfs, ReadOnly: true}}}, want: ErrInvalid, wantMsg: "read-only"},
		{name: "empty command", tname: "t", o: BuildOptions{Spec: spec, Run: []string{"true", " "}}, want: ErrInvalid, wantMsg: "setup command 2 is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fakefc != "" {
				t.Setenv("FAKEFC", tt.fakefc)
			}
			_, err := r.tpl.Build(context.Background(), tt.tname, tt.o)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("build: %v, want %v and %q", err, tt.want, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("not one line: %q", err)
			}
			var names []string
			ents, _ := os.ReadDir(r.Root())
			for _, e := range ents {
				if e.Name() != ".locks" { // the runtime's, made by Open
					names = append(names, e.Name())
				}
			}
			if len(names) > 0 {
				t.Errorf("the state root holds %v after bad input", names)
			}
		})
	}
}

// checkNoSimLeftovers fails the test if a mount or a loop device of a file
// under root is left, after giving the simulated guests' teardown a few
// seconds.
func checkNoSimLeftovers(t *testing.T, root string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[4] == root {
				continue // the state root itself, a tmpfs the test mounted
			}
			if strings.Contains(l, root) {
				left = append(left, "mount: "+l)
			}
		}
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, f := range loops {
			if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), root) {
				left = append(left, "loop device on "+strings.TrimSpace(string(b)))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("simulated guests left behind: %s", strings.Join(left, "; "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
