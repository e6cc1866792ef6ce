package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// manifestName is the file in a snapshot directory that describes it.
const manifestName = "kindling-snapshot.json"

// errHoldsSnapshot: a snapshot is to be written where one is already.
var errHoldsSnapshot = errdefs.New(errdefs.ErrExists, "already holds a snapshot")

// manifestVersion is the format version of the manifest this package
// writes. Version 2: the VMM configuration in it has explicit snake_case
// keys; version 1 (the Go field names, see vmm.Config) is still read.
const (
	manifestVersion       = 2
	oldestManifestVersion = 1
)

// manifest describes a sandbox snapshot directory.
type manifest struct {
	Version   int          `json:"version"`
	CreatedAt time.Time    `json:"created_at"`
	From      string       `json:"from"`
	Spec      Spec         `json:"spec"`
	Kernel    string       `json:"kernel"`
	Taps      []tapRef     `json:"taps,omitempty"`
	Snapshot  vmm.Snapshot `json:"snapshot"`
}

// Snapshot writes a full snapshot of a running or paused sandbox into dir
// (created if missing; it must not already hold a snapshot). A running
// sandbox is paused for the snapshot and resumed afterwards.
func (r *Runtime) Snapshot(ctx context.Context, id, dir string) error {
	if err := absPath(&dir); err != nil {
		return specError(err)
	}
	if _, err := os.Stat(filepath.Join(dir, manifestName)); err == nil {
		return fmt.Errorf("%w: snapshot directory %s %w", ErrInvalidSpec, dir, errHoldsSnapshot)
	}
	return r.withMachine(ctx, id, "snapshot", "sandbox.Snapshot", func(ctx context.Context, m *vmm.Machine, rec *record) error {
		snap, err := m.CreateSnapshot(ctx, vmm.SnapshotOptions{Dir: dir, PauseAround: true})
		if err != nil {
			return err
		}
		man := manifest{
			Version: manifestVersion, CreatedAt: time.Now().UTC(), From: rec.ID,
			Spec: rec.Spec, Kernel: rec.Kernel, Taps: rec.Taps, Snapshot: snap,
		}
		return writeManifest(dir, &man)
	})
}

// RestoreOptions name the sandbox a snapshot is restored into.
type RestoreOptions struct {
	// ID of the new sandbox; empty for a random one.
	ID string
	// Net replaces the snapshot's network interfaces, one for one; nil keeps
	// the snapshot's (own taps are created anew for the new sandbox).
	Net []Net
	// AutoRemove removes the sandbox once its VMM exits.
	AutoRemove bool
}

// Restore creates a new sandbox from the snapshot in dir and starts it: a
// new VMM loads the snapshot and resumes. The drives the snapshot was taken
// with must still be at their paths.
func (r *Runtime) Restore(ctx context.Context, dir string, o RestoreOptions) (_ Info, err error) {
	ctx, end := r.span(ctx, "sandbox.Restore", o.ID)
	defer end(&err)

	if err := absPath(&dir); err != nil {
		return Info{}, specError(err)
	}
	man, err := readManifest(dir)
	if err != nil {
		return Info{}, err
	}
	spec := man.Spec
	spec.ID = o.ID
	// The restored guest resumes where it was: it will not print its
	// start-up text again.
	spec.WaitConsole = ""
	if o.Net != nil {
		if len(o.Net) != len(man.Taps) {
			return Info{}, fmt.Errorf("%w: the snapshot has %d network interfaces: give as many, or none", ErrInvalidSpec, len(man.Taps))
		}
		spec.Net = o.Net
	}
	rec, err := r.newRecord(spec)
	if err != nil {
		return Info{}, err
	}
	rec.RestoreFrom, rec.AutoRemove = dir, o.AutoRemove
	if err := r.st.Create(ctx, rec.ID, rec); err != nil {
		if errors.Is(err, ErrExists) {
			return Info{}, fmt.Errorf("sandbox %q: %w", rec.ID, ErrExists)
		}
		return Info{}, fmt.Errorf("restore into sandbox %q: %w", rec.ID, err)
	}
	in, err := r.Start(ctx, rec.ID)
	if err != nil {
		rmErr := r.Remove(context.WithoutCancel(ctx), rec.ID, true)
		return Info{}, errors.Join(err, rmErr)
	}
	return in, nil
}

func readManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a kindling snapshot directory: %w", ErrInvalidSpec, dir, err)
	}
	var man manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, fmt.Errorf("snapshot manifest %s: %w: %w", filepath.Join(dir, manifestName), ErrCorrupt, err)
	}
	if man.Version < oldestManifestVersion || man.Version > manifestVersion {
		return nil, fmt.Errorf("snapshot manifest %s: format version %d, this kindling reads %d to %d: %w", filepath.Join(dir, manifestName), man.Version, oldestManifestVersion, manifestVersion, ErrNotSupported)
	}
	return &man, nil
}

// encodeManifest is the content of a manifest file.
func encodeManifest(man *manifest) ([]byte, error) {
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode snapshot manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// writeManifest writes man into the snapshot directory dir, atomically.
func writeManifest(dir string, man *manifest) error {
	b, err := encodeManifest(man)
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(dir, manifestName, b)
}

// restoreMachine loads the snapshot rec was created from into a new VMM
// configured like cfg.
func restoreMachine(ctx context.Context, cfg vmm.Config, rec *record, opts []vmm.Option) (*vmm.Machine, error) {
	man, err := readManifest(rec.RestoreFrom)
	if err != nil {
		return nil, err
	}
	rc := vmm.RestoreConfig{Snapshot: man.Snapshot, Config: cfg, Resume: true}
	snapIfaces := man.Snapshot.Config.NetworkInterfaces
	for i, iface := range cfg.NetworkInterfaces {
		if i < len(snapIfaces) && snapIfaces[i].TapName != iface.TapName {
			rc.NetworkOverrides = append(rc.NetworkOverrides, vmm.NetworkOverride{IfaceID: snapIfaces[i].ID, TapName: iface.TapName})
		}
	}
	return vmm.Restore(ctx, rc, opts...)
}
