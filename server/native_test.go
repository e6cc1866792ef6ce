package server_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// Every Controller operation through the server, on a sandbox the local
// runtime sees as the server's client does.
func TestNativeLifecycle(t *testing.T) { testNativeLifecycle(t, false) }

// The same against the real Firecracker of $KINDLING_FIRECRACKER.
func TestNativeLifecycleReal(t *testing.T) { testNativeLifecycle(t, true) }

func testNativeLifecycle(t *testing.T, real bool) {
	if real {
		cfgFirecracker = testutil.Firecracker(t)
	}
	r := newRig(t, server.Config{})
	ctx := context.Background()
	c := r.client
	spec := sandbox.Spec{ID: "web", Kernel: haltGuest(t, "hello from the guest"), Firecracker: r.fc,
		Labels: map[string]string{"app": "web"}}
	in, err := c.Create(ctx, spec, sandbox.CreateOptions{})
	must(t, err)
	if in.ID != "web" || in.Status != sandbox.Created || in.Spec.Labels["app"] != "web" {
		t.Fatalf("created %+v", in)
	}
	// The local runtime sees what the server made.
	if local, err := r.rt.Inspect(ctx, "web"); err != nil || local.Status != sandbox.Created {
		t.Fatalf("local inspect: %+v, %v", local, err)
	}
	in, err = c.Start(ctx, "web")
	must(t, err)
	if in.Status != sandbox.Running || in.PID == 0 || in.StartedAt.IsZero() {
		t.Fatalf("started %+v", in)
	}
	waitFor(t, "the console greeting", func() bool {
		rc, err := c.Console(ctx, "web", sandbox.LogOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return strings.Contains(string(b), "hello from the guest")
	})
	logs, err := c.Logs(ctx, "web", sandbox.LogOptions{})
	must(t, err)
	_, err = io.Copy(io.Discard, logs)
	must(t, errors.Join(err, logs.Close()))

	must(t, c.Pause(ctx, "web"))
	if in, _ := c.Inspect(ctx, "web"); in.Status != sandbox.Paused {
		t.Fatalf("after pause: %s", in.Status)
	}
	must(t, c.Resume(ctx, "web"))
	list, err := c.List(ctx, sandbox.ListOptions{Labels: map[string]string{"app": "web"}})
	must(t, err)
	if len(list) != 1 || list[0].ID != "web" || list[0].Status != sandbox.Running {
		t.Fatalf("list by label: %+v", list)
	}
	if list, _ := c.List(ctx, sandbox.ListOptions{Labels: map[string]string{"app": "db"}}); len(list) != 0 {
		t.Fatalf("list by another label: %+v", list)
	}

	snap := filepath.Join(t.TempDir(), "snap")
	si, err := c.Snapshot(ctx, "web", snap, sandbox.SnapshotOptions{})
	must(t, err)
	if si.Dir != snap || si.Firecracker == "" {
		t.Fatalf("snapshot %+v", si)
	}
	in2, err := c.Restore(ctx, snap, sandbox.RestoreOptions{ID: "web2"})
	must(t, err)
	if in2.Status != sandbox.Running || in2.RestoredFrom != snap {
		t.Fatalf("restored %+v", in2)
	}

	waited := make(chan error, 1)
	go func() {
		exit, err := c.Wait(ctx, "web2")
		if err == nil && exit == nil {
			err = errors.New("no exit")
		}
		waited <- err
	}()
	must(t, c.Kill(ctx, "web2"))
	select {
	case err := <-waited:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Kill")
	}
	must(t, c.Stop(ctx, "web", sandbox.StopGrace(0)))
	if in, _ := c.Inspect(ctx, "web"); in.Status != sandbox.Exited || in.Exit == nil {
		t.Fatalf("after stop: %+v", in)
	}
	must(t, c.Remove(ctx, "web", false))
	must(t, c.Remove(ctx, "web2", false))
	if _, err := r.rt.Inspect(ctx, "web"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("local inspect after remote remove: %v", err)
	}
}

// Each kindling error kind crosses the wire as itself: errors.Is works on
// the client as on the local runtime.
func TestNativeErrorKinds(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	c := r.client
	must(t, func() error { _, err := c.Create(ctx, r.idleSpec("one"), sandbox.CreateOptions{}); return err }())
	t.Cleanup(func() { _ = r.rt.Remove(context.Background(), "one", true) })

	// A corrupt state file.
	must(t, os.MkdirAll(filepath.Join(r.rt.Root(), "broken"), 0o700))
	must(t, os.WriteFile(filepath.Join(r.rt.Root(), "broken", "state.json"), []byte("{not json"), 0o600))
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(r.rt.Root(), "broken")) })

	down, err := remote.New(remote.Config{Host: "unix://" + filepath.Join(t.TempDir(), "nobody.sock")})
	must(t, err)
	defer down.Close()

	tests := []struct {
		name string
		kind error
		call func() error
	}{
		{"not found", sandbox.ErrNotFound, func() error { _, err := c.Inspect(ctx, "nosuch"); return err }},
		{"exists", sandbox.ErrExists, func() error { _, err := c.Create(ctx, r.idleSpec("one"), sandbox.CreateOptions{}); return err }},
		{"invalid", sandbox.ErrInvalid, func() error {
			_, err := c.Create(ctx, sandbox.Spec{ID: "bad", VCPUs: 99, Firecracker: r.fc}, sandbox.CreateOptions{})
			return err
		}},
		{"invalid id", sandbox.ErrInvalid, func() error { return c.Pause(ctx, "") }},
		{"conflict", sandbox.ErrConflict, func() error { return c.Pause(ctx, "one") }},
		{"not supported", sandbox.ErrNotSupported, func() error {
			// A snapshot written by a newer kindling.
			dir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dir, "kindling-snapshot.json"), []byte(`{"version": 999}`), 0o600))
			_, err := c.Restore(ctx, dir, sandbox.RestoreOptions{ID: "two"})
			return err
		}},
		{"corrupt", sandbox.ErrCorrupt, func() error { _, err := c.Inspect(ctx, "broken"); return err }},
		{"unavailable", sandbox.ErrUnavailable, func() error { _, err := down.List(ctx, sandbox.ListOptions{}); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.kind) {
				t.Fatalf("got %v, want an error matching %v", err, tt.kind)
			}
			for _, other := range []error{sandbox.ErrNotFound, sandbox.ErrExists, sandbox.ErrInvalid, sandbox.ErrConflict,
				sandbox.ErrNotSupported, sandbox.ErrUnavailable, sandbox.ErrCorrupt} {
				if other != tt.kind && errors.Is(err, other) {
					t.Errorf("%v also matches %v", err, other)
				}
			}
		})
	}
}

// Templates through the server: make one, clone it, list, remove.
func TestNativeTemplates(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	c := r.client
	_, err := c.Create(ctx, r.idleSpec("src"), sandbox.CreateOptions{})
	must(t, err)
	_, err = c.Start(ctx, "src")
	must(t, err)
	tpl, err := c.CreateTemplate(ctx, "base", "src", true)
	must(t, err)
	if tpl.Name != "base" || tpl.From != "src" || tpl.Firecracker == "" {
		t.Fatalf("template %+v", tpl)
	}
	must(t, c.Remove(ctx, "src", true))
	in, err := c.RunTemplate(ctx, "base", template.CloneOptions{ID: "clone1", Labels: map[string]string{"from": "base"}})
	must(t, err)
	if in.Status != sandbox.Running || in.Spec.Labels["from"] != "base" {
		t.Fatalf("clone %+v", in)
	}
	list, err := c.Templates(ctx)
	must(t, err)
	if len(list) != 1 || list[0].Name != "base" || len(list[0].Clones) != 1 {
		t.Fatalf("templates %+v", list)
	}
	if err := c.RemoveTemplate(ctx, "base", false); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("remove a template with a clone: %v", err)
	}
	if _, err := c.Template(ctx, "nosuch"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("inspect a missing template: %v", err)
	}
	must(t, c.Remove(ctx, "clone1", true))
	must(t, c.RemoveTemplate(ctx, "base", false))
}

// A request never chooses a program for kindlingd to run: a firecracker,
// jailer or CNI plugin directory other than the server's is refused before
// anything is made, and the server's own firecracker is accepted.
func TestNativeNamedExecutables(t *testing.T) {
	r := newRig(t, server.Config{})
	c := r.client
	ctx := context.Background()
	script := filepath.Join(t.TempDir(), "not-firecracker")
	must(t, os.WriteFile(script, []byte("#!/bin/sh\ntouch "+script+".ran\n"), 0o755))
	for _, tt := range []struct {
		name string
		spec sandbox.Spec
		want string
	}{
		{"firecracker", sandbox.Spec{ID: "fc", Demo: sandbox.DemoIdle, Firecracker: script}, "runs only the firecracker it was configured with"},
		{"jailer", sandbox.Spec{ID: "jail", Demo: sandbox.DemoIdle, Firecracker: r.fc, Jailer: script}, "runs only the jailer it was configured with"},
		{"cni", sandbox.Spec{ID: "cni", Demo: sandbox.DemoIdle, Firecracker: r.fc, CNIBinDirs: []string{filepath.Dir(script)}}, "CNI plugins of its own configuration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Create(ctx, tt.spec, sandbox.CreateOptions{})
			if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create = %v, want ErrInvalid saying %q", err, tt.want)
			}
			if _, err := c.Inspect(ctx, tt.spec.ID); !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("after the refusal, Inspect = %v, want not found", err)
			}
		})
	}
	_, err := c.Restore(ctx, t.TempDir(), sandbox.RestoreOptions{ID: "restored", Firecracker: script})
	if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), "runs only the firecracker") {
		t.Errorf("Restore naming another firecracker = %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(script + ".ran"); err == nil {
		t.Error("the named program ran")
	}
	if _, err := c.Create(ctx, r.idleSpec("ok"), sandbox.CreateOptions{}); err != nil {
		t.Errorf("Create naming the server's own firecracker: %v", err)
	}
	if err := c.Remove(ctx, "ok", false); err != nil {
		t.Errorf("Remove: %v", err)
	}
}
