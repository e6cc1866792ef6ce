package template

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

func TestSentinelsAreTheSameValues(t *testing.T) {
	for _, s := range []struct {
		name      string
		got, want error
	}{
		{"ErrNotFound", ErrNotFound, sandbox.ErrNotFound},
		{"ErrExists", ErrExists, sandbox.ErrExists},
		{"ErrNotSupported", ErrNotSupported, sandbox.ErrNotSupported},
		{"ErrInvalid", ErrInvalid, sandbox.ErrInvalid},
		{"ErrConflict", ErrConflict, sandbox.ErrConflict},
	} {
		if s.got != s.want {
			t.Errorf("template.%s is not sandbox's", s.name)
		}
	}
	if !errors.Is(ErrCorrupt, errdefs.ErrCorrupt) {
		t.Error("ErrCorrupt does not match errdefs.ErrCorrupt")
	}
}

// errCase is one public entry point and the error it must return.
type errCase struct {
	name string
	call func(ctx context.Context) error
}

func checkAll(t *testing.T, want error, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := c.call(ctx)
			if !errors.Is(err, want) {
				t.Fatalf("error %v, want one matching %v", err, want)
			}
			for _, cli := range []string{"'kindling", "--name", "--force", "--net"} {
				if strings.Contains(err.Error(), cli) {
					t.Errorf("error %q carries the CLI hint %q", err, cli)
				}
			}
		})
	}
}

// Each sentinel through every entry point of the store that returns it.
func TestErrorsEveryEntryPoint(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx := context.Background()
	templateSource(t, r, fc, "src")
	defer removeAll(t, r, "src")
	if _, err := r.rt.Create(ctx, sandbox.Spec{ID: "idle", Kernel: haltGuest(t, "idle"), Firecracker: fc}, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer removeAll(t, r, "idle")

	t.Run("not found", func(t *testing.T) {
		// With and without a template store.
		for _, when := range []string{"no store", "store"} {
			if when == "store" {
				if _, err := r.tpl.Create(ctx, "other", "src", Options{}); err != nil {
					t.Fatal(err)
				}
				defer r.tpl.Remove(ctx, "other", false)
			}
			t.Run(when, func(t *testing.T) {
				checkAll(t, ErrNotFound, []errCase{
					{"Run", func(ctx context.Context) error {
						_, err := r.tpl.Run(ctx, "nope", CloneOptions{Firecracker: r.fc})
						return err
					}},
					{"Inspect", func(ctx context.Context) error { _, err := r.tpl.Inspect(ctx, "nope"); return err }},
					{"Verify", func(ctx context.Context) error { return r.tpl.Verify(ctx, "nope") }},
					{"Remove", func(ctx context.Context) error { return r.tpl.Remove(ctx, "nope", false) }},
					{"Create/source", func(ctx context.Context) error { _, err := r.tpl.Create(ctx, "t", "nope", Options{}); return err }},
				})
			})
		}
	})

	if _, err := r.tpl.Create(ctx, "tpl", "src", Options{}); err != nil {
		t.Fatal(err)
	}
	defer r.tpl.Remove(ctx, "tpl", true)
	if _, err := r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: "clone"}); err != nil {
		t.Fatal(err)
	}
	defer removeAll(t, r, "clone")

	checkAll(t, ErrExists, []errCase{
		{"Create", func(ctx context.Context) error { _, err := r.tpl.Create(ctx, "tpl", "src", Options{}); return err }},
		{"Run", func(ctx context.Context) error {
			_, err := r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: "clone"})
			return err
		}},
	})
	checkAll(t, ErrInvalid, []errCase{
		{"Create", func(ctx context.Context) error { _, err := r.tpl.Create(ctx, "../x", "src", Options{}); return err }},
		{"Run/name", func(ctx context.Context) error {
			_, err := r.tpl.Run(ctx, "a/b", CloneOptions{Firecracker: r.fc})
			return err
		}},
		{"Run/net", func(ctx context.Context) error {
			_, err := r.tpl.Run(ctx, "tpl", CloneOptions{Firecracker: r.fc, ID: "c2", Net: []sandbox.Net{{Auto: true}}})
			return err
		}},
		{"Inspect", func(ctx context.Context) error { _, err := r.tpl.Inspect(ctx, "-x"); return err }},
		{"Remove", func(ctx context.Context) error { return r.tpl.Remove(ctx, "-x", false) }},
	})
	checkAll(t, ErrConflict, []errCase{
		{"Create", func(ctx context.Context) error { _, err := r.tpl.Create(ctx, "t2", "idle", Options{}); return err }},
		{"Remove", func(ctx context.Context) error { return r.tpl.Remove(ctx, "tpl", false) }},
	})

	// Corrupt: a template whose memory file changed.
	bad, err := r.tpl.Create(ctx, "bad", "src", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.tpl.Remove(ctx, "bad", true)
	if err := os.WriteFile(filepath.Join(bad.Dir, vmm.SnapshotMemFile), []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkAll(t, ErrCorrupt, []errCase{
		{"Run", func(ctx context.Context) error {
			_, err := r.tpl.Run(ctx, "bad", CloneOptions{Firecracker: r.fc, ID: "c3"})
			return err
		}},
		{"Verify", func(ctx context.Context) error { return r.tpl.Verify(ctx, "bad") }},
	})
	checkAll(t, errdefs.ErrCorrupt, []errCase{
		{"Verify/kind", func(ctx context.Context) error { return r.tpl.Verify(ctx, "bad") }},
	})
}

// A template with a vsock device made before kindling named the socket
// relative to the sandbox's directory cannot be cloned before Firecracker
// 1.16 (a clone needs a socket of its own): ErrNotSupported.
func TestErrNotSupportedEveryEntryPoint(t *testing.T) {
	t.Setenv("FAKEFC", `{"version":"1.14.2"}`)
	r, fc := newRuntime(t, false)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	ctx := context.Background()
	if _, err := r.rt.Create(ctx, sandbox.Spec{ID: "vs", Kernel: haltGuest(t, "vs"), Firecracker: fc, VsockCID: 3}, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer removeAll(t, r, "vs")
	if _, err := r.rt.Start(ctx, "vs"); err != nil {
		t.Fatal(err)
	}
	tpl, err := r.tpl.Create(ctx, "vs", "vs", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.tpl.Remove(ctx, "vs", true)
	// Made so by an older kindling: no vsock_per_clone.
	mpath := filepath.Join(tpl.Dir, templateManifestName)
	b, err := os.ReadFile(mpath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // the files' stamps are nanoseconds: keep every digit
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m["vsock_per_clone"] != true {
		t.Fatalf("template manifest: vsock_per_clone %v, want true", m["vsock_per_clone"])
	}
	delete(m, "vsock_per_clone")
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mpath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	checkAll(t, ErrNotSupported, []errCase{
		{"Run", func(ctx context.Context) error {
			_, err := r.tpl.Run(ctx, "vs", CloneOptions{Firecracker: r.fc, ID: "c"})
			return err
		}},
	})
}
