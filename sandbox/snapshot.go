package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// writes. Version 5: the drive copies and placeholders a snapshot owns
// are recorded in Firecracker's state file by names relative to its run
// directory (vmm.Snapshot.Relocated), and in the manifest's VMM
// configuration relative to the snapshot directory, so that a moved
// snapshot that owns drives restores. Version 4: the spec in it may name CNI networks, their
// directories and published ports (new keys only). Version 3: the files the snapshot holds (its state and memory
// files, and what it owns: drive copies, its kernel) are named relative to
// the snapshot directory, so that a moved or copied directory restores its
// own files. Version 2: the VMM configuration in it has explicit
// snake_case keys; version 1 (the Go field names, see vmm.Config) is still
// read. Versions 1 and 2 are read only while their state and memory files
// are still inside the directory they name.
const (
	manifestVersion       = 5
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

// SnapshotOptions tune Snapshot.
type SnapshotOptions struct {
	// Own makes the snapshot own copies of the files it names that the
	// sandbox could change or lose: its writable drives, its hotplug
	// placeholders and its kernel are copied into the snapshot directory
	// while the guest is paused, and the snapshot names the copies. It then
	// stays valid whatever happens to the sandbox (templates are made so).
	// It is refused for a jailed sandbox and while a hotplug slot holds a
	// drive.
	Own bool `json:"own,omitempty"`
	// LeavePaused leaves the sandbox paused after the snapshot instead of
	// resuming it.
	LeavePaused bool `json:"leave_paused,omitempty"`
}

// SnapshotInfo describes a snapshot directory: what a sandbox restored
// from it is made of.
type SnapshotInfo struct {
	Dir       string    `json:"dir"`
	From      string    `json:"from"`
	CreatedAt time.Time `json:"created_at"`
	// Firecracker is the release that wrote the snapshot; only that
	// release loads it.
	Firecracker string `json:"firecracker"`
	// Spec is the spec a restored sandbox gets, with the paths the
	// snapshot names.
	Spec   Spec   `json:"spec"`
	Kernel string `json:"kernel"`
	// Drives are the drives the snapshot names.
	Drives []SnapshotDrive `json:"drives,omitempty"`
	// Taps are the network interfaces' taps of the snapshotted sandbox.
	Taps []TapInfo `json:"taps,omitempty"`
	// VsockPerRestore is set when every sandbox restored from the
	// snapshot binds a vsock socket of its own on any Firecracker release
	// (see vmm.Snapshot.VsockPerRestore); otherwise, with a vsock device,
	// only releases that override the socket on load (≥ 1.16) do.
	VsockPerRestore bool `json:"vsock_per_restore,omitempty"`
}

// SnapshotDrive is a drive a snapshot names.
type SnapshotDrive struct {
	ID       string `json:"id"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Root     bool   `json:"root,omitempty"`
	// Owned is set when Path is the snapshot's own copy, in its directory.
	Owned bool `json:"owned,omitempty"`
}

// Snapshot writes a full snapshot of a running or paused sandbox into dir
// (created if missing; it must not already hold a snapshot). A running
// sandbox is paused for the snapshot and resumed afterwards, unless
// o.LeavePaused.
func (r *Runtime) Snapshot(ctx context.Context, id, dir string, o SnapshotOptions) (SnapshotInfo, error) {
	if err := absPath(&dir); err != nil {
		return SnapshotInfo{}, specError(err)
	}
	created, err := prepareSnapshotDir(dir)
	if err != nil {
		return SnapshotInfo{}, err
	}
	var man manifest
	err = r.withMachine(ctx, id, "snapshot", "sandbox.Snapshot", func(ctx context.Context, m *vmm.Machine, rec *record) (undoFunc, error) {
		var err error
		was := rec.Status
		if !o.Own && !o.LeavePaused {
			snap, err := m.CreateSnapshot(ctx, vmm.SnapshotOptions{Dir: dir, PauseAround: true})
			if err != nil {
				return nil, err
			}
			man = manifest{
				Version: manifestVersion, CreatedAt: time.Now().UTC(), From: rec.ID,
				Spec: rec.Spec, Kernel: rec.Kernel, Taps: rec.Taps, Snapshot: snap,
			}
		} else if man, err = snapshotPaused(ctx, m, rec, dir, o); err != nil {
			return nil, err
		}
		if err := snapshotToken(r, rec, dir); err != nil {
			return nil, err
		}
		var undo undoFunc
		if was == Running && rec.Status == Paused {
			undo = m.Resume // left paused, but not recorded so
		}
		return undo, writeManifest(dir, &man)
	})
	if err != nil {
		if created {
			os.Remove(dir) // only if the failure left it empty
		}
		return SnapshotInfo{}, err
	}
	return man.info(dir), nil
}

// prepareSnapshotDir makes the snapshot directory dir, or checks the one
// there: it must be private to the caller (store.CheckPrivateDir: not a
// symlink, owned by the caller, writable by nobody else) and empty, so that
// nothing in it — a planted symlink above all — is written through. It
// reports whether it made dir.
func prepareSnapshotDir(dir string) (created bool, err error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return false, fmt.Errorf("%w: snapshot directory: %w", ErrInvalidSpec, err)
	}
	err = os.Mkdir(dir, 0o700)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("%w: snapshot directory: %w", ErrInvalidSpec, err)
	}
	if err := store.CheckPrivateDir("snapshot directory", dir); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, manifestName)); err == nil {
		return false, fmt.Errorf("%w: snapshot directory %s %w", ErrInvalidSpec, dir, errHoldsSnapshot)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("%w: snapshot directory: %w", ErrInvalidSpec, err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("%w: snapshot directory %s is not empty (it holds %s): give a new or empty directory", ErrInvalidSpec, dir, ents[0].Name())
	}
	return false, nil
}

// snapshotPaused pauses the sandbox (if it runs), copies what the snapshot
// is to own (o.Own), writes the snapshot and resumes the sandbox unless
// o.LeavePaused. It returns the snapshot's manifest.
func snapshotPaused(ctx context.Context, m *vmm.Machine, rec *record, dir string, o SnapshotOptions) (_ manifest, err error) {
	switch perr := m.Pause(ctx); {
	case perr == nil:
		rec.Status = Paused
		if !o.LeavePaused {
			defer func() {
				if rerr := m.Resume(context.WithoutCancel(ctx)); rerr != nil {
					err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
					return
				}
				rec.Status = Running
			}()
		}
	case errors.Is(perr, ErrInvalidState):
		// Paused already: it stays so.
	default:
		return manifest{}, perr
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return manifest{}, err
	}
	spec := rec.Spec
	kernel := rec.Kernel
	var rel []vmm.DriveOverride
	if o.Own {
		// Copy what the snapshot will name while the guest cannot write.
		for _, d := range m.Config().Drives {
			if d.ReadOnly {
				continue
			}
			dst := filepath.Join(dir, "drive-"+d.ID+".img")
			if err := copyFileSparse(d.Path, dst); err != nil {
				return manifest{}, fmt.Errorf("copy drive %q: %w", d.ID, err)
			}
			rel = append(rel, vmm.DriveOverride{ID: d.ID, Path: dst})
		}
		for _, s := range m.Pool() {
			if s.Drive != nil {
				return manifest{}, fmt.Errorf("hotplug slot %s holds %s: detach it first: %w", s.ID, s.Drive.Path, ErrInvalidState)
			}
			dst := filepath.Join(dir, s.ID+".img")
			if err := copyFileSparse(s.Placeholder, dst); err != nil {
				return manifest{}, fmt.Errorf("copy placeholder %q: %w", s.ID, err)
			}
			rel = append(rel, vmm.DriveOverride{ID: s.ID, Path: dst})
		}
		kernel = filepath.Join(dir, ownKernelName)
		if err := copyFileSparse(rec.Kernel, kernel); err != nil {
			return manifest{}, fmt.Errorf("copy kernel: %w", err)
		}
		spec.Kernel, spec.Demo = kernel, "" // the snapshot owns its kernel, demo or not
	}
	snap, err := m.CreateSnapshot(ctx, vmm.SnapshotOptions{Dir: dir, Relocate: rel})
	if err != nil {
		return manifest{}, err
	}
	moved := map[string]string{}
	for _, d := range rel {
		moved[d.ID] = d.Path
	}
	if spec.Rootfs != nil {
		rootfs := *spec.Rootfs
		if p, ok := moved["rootfs"]; ok {
			rootfs.Path = p
		}
		spec.Rootfs = &rootfs
	}
	spec.Drives = append([]Disk(nil), spec.Drives...)
	for i := range spec.Drives {
		if p, ok := moved[fmt.Sprintf("drive%d", i)]; ok {
			spec.Drives[i].Path = p
		}
	}
	return manifest{Version: manifestVersion, CreatedAt: time.Now().UTC(), From: rec.ID, Spec: spec, Kernel: kernel, Taps: rec.Taps, Snapshot: snap}, nil
}

// ownKernelName is the kernel's copy in a snapshot made with Own.
const ownKernelName = "kernel"

// info describes the snapshot directory dir holding man.
func (man *manifest) info(dir string) SnapshotInfo {
	in := SnapshotInfo{
		Dir: dir, From: man.From, CreatedAt: man.CreatedAt, Firecracker: man.Snapshot.Firecracker,
		Spec: man.Spec, Kernel: man.Kernel, VsockPerRestore: man.Snapshot.VsockPerRestore(),
	}
	// A drive's path is the spec's (resolved against dir, where the
	// snapshot's own copies are), not the one Firecracker recorded.
	specPath := map[string]string{}
	if man.Spec.Rootfs != nil {
		specPath["rootfs"] = man.Spec.Rootfs.Path
	}
	for i, d := range man.Spec.Drives {
		specPath[fmt.Sprintf("drive%d", i)] = d.Path
	}
	for _, d := range man.Snapshot.Config.Drives {
		p := d.Path
		if sp, ok := specPath[d.ID]; ok {
			p = sp
		}
		in.Drives = append(in.Drives, SnapshotDrive{ID: d.ID, Path: p, ReadOnly: d.ReadOnly, Root: d.Root, Owned: filepath.Dir(p) == dir})
	}
	for _, t := range man.Taps {
		in.Taps = append(in.Taps, TapInfo{Name: t.Name, NetNS: t.NetNS, MAC: t.MAC, Created: t.Owned})
	}
	return in
}

// ReadSnapshot describes the snapshot in dir. A directory without a
// snapshot gives an error matching ErrInvalidSpec; an unreadable manifest
// one matching ErrCorrupt.
func ReadSnapshot(dir string) (SnapshotInfo, error) {
	if err := absPath(&dir); err != nil {
		return SnapshotInfo{}, specError(err)
	}
	man, err := readManifest(dir)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return man.info(dir), nil
}

// RestoreOptions name the sandbox a snapshot is restored into.
type RestoreOptions struct {
	// ID of the new sandbox; empty for a random one.
	ID string `json:"id,omitempty"`
	// Net replaces the snapshot's network interfaces, one for one; nil keeps
	// the snapshot's (own taps are created anew for the new sandbox).
	Net []Net `json:"net,omitempty"`
	// Ports replace the snapshot's published ports (HOSTPORT:GUESTPORT);
	// nil keeps them, an empty list publishes none (a clone whose source
	// still holds the host ports).
	Ports []string `json:"ports"`
	// AutoRemove removes the sandbox once its VMM exits.
	AutoRemove bool `json:"auto_remove,omitempty"`
	// Firecracker is the executable the new sandbox runs; empty for the
	// one configured by default (see FindFirecracker). It must be of the
	// release that wrote the snapshot. A snapshot never chooses it.
	Firecracker string `json:"firecracker,omitempty"`
	// Jailer runs the new sandbox's Firecracker through this jailer (as
	// root, by default the one found). The new sandbox must be jailed
	// exactly when the snapshotted one was. A snapshot never chooses it.
	Jailer string `json:"jailer,omitempty"`
	// NoJailer restores without the jailer even as root: needed for a
	// snapshot of a sandbox that ran without it.
	NoJailer bool `json:"no_jailer,omitempty"`
	// FirecrackerRelease is Firecracker's release ("1.7.0") when the caller
	// has asked the executable already; empty makes CreateFromSnapshot ask
	// it (firecracker --version) before comparing it with the snapshot's.
	FirecrackerRelease string `json:"firecracker_release,omitempty"`
	// CopyOwnedDrives gives the new sandbox, in its directory, a copy of
	// every writable drive the snapshot owns (SnapshotDrive.Owned), so
	// that many sandboxes can start from one snapshot.
	CopyOwnedDrives bool `json:"copy_owned_drives,omitempty"`
	// Labels are the new sandbox's labels (see Spec.Labels).
	Labels map[string]string `json:"labels,omitempty"`
}

// Restore creates a new sandbox from the snapshot in dir and starts it: a
// new VMM loads the snapshot and resumes. The drives the snapshot was taken
// with must still be at their paths (or be owned by it, see
// RestoreOptions.CopyOwnedDrives). A sandbox that cannot start is removed.
func (r *Runtime) Restore(ctx context.Context, dir string, o RestoreOptions) (_ Info, err error) {
	ctx, end := r.span(ctx, "sandbox.Restore", o.ID)
	defer end(&err)

	in, err := r.CreateFromSnapshot(ctx, dir, o)
	if err != nil {
		return Info{}, err
	}
	id := in.ID
	if in, err = r.Start(ctx, id); err != nil {
		rmErr := r.Remove(context.WithoutCancel(ctx), id, true)
		return Info{}, errors.Join(err, rmErr)
	}
	return in, nil
}

// CreateFromSnapshot records a new sandbox, in the Created state, that
// Start restores from the snapshot in dir instead of booting. Nothing is
// spawned; Restore is CreateFromSnapshot and Start.
func (r *Runtime) CreateFromSnapshot(ctx context.Context, dir string, o RestoreOptions) (_ Info, err error) {
	ctx, end := r.span(ctx, "sandbox.CreateFromSnapshot", o.ID)
	defer end(&err)

	if err := absPath(&dir); err != nil {
		return Info{}, specError(err)
	}
	man, err := readManifest(dir)
	if err != nil {
		return Info{}, err
	}
	if err := checkRestoreNetwork(man.Spec, dir); err != nil {
		return Info{}, err
	}
	spec := man.Spec
	spec.ID = o.ID
	spec.Labels = o.Labels
	// The restored guest resumes where it was: it will not print its
	// start-up text again.
	spec.WaitConsole = ""
	// Nothing in a snapshot chooses a program: the executables are the
	// caller's, and the snapshot's release is only compared with theirs.
	spec.Firecracker, spec.Jailer, spec.NoJailer = o.Firecracker, o.Jailer, o.NoJailer
	if o.Net != nil {
		if len(o.Net) != len(man.Taps) {
			return Info{}, fmt.Errorf("%w: the snapshot has %d network interfaces: give as many, or none", ErrInvalidSpec, len(man.Taps))
		}
		spec.Net = o.Net
	}
	if o.Ports != nil {
		spec.Ports = o.Ports
	}
	var copied []string
	if o.CopyOwnedDrives {
		for _, d := range man.info(dir).Drives {
			if d.Owned && !d.ReadOnly {
				copied = append(copied, d.Path)
			}
		}
	}
	rec, err := r.newRecord(spec, copied...)
	if err != nil {
		return Info{}, err
	}
	// The snapshot's paths are the ones its Firecracker saw, in its jail
	// or not: the restored sandbox must be like it.
	if (man.Spec.Jailer != "") != (rec.Spec.Jailer != "") {
		what := "ran without the jailer: restore it without one (--no-jailer)"
		if man.Spec.Jailer != "" {
			what = "ran under the jailer: restore it under the jailer (leave out --no-jailer, or give --jailer PATH)"
		}
		return Info{}, fmt.Errorf("%w: the sandbox snapshotted in %s %s", ErrInvalidSpec, dir, what)
	}
	if err := r.checkSnapshotRelease(ctx, rec.Spec.Firecracker, o.FirecrackerRelease, man.Snapshot.Firecracker, dir); err != nil {
		return Info{}, err
	}
	rec.RestoreFrom, rec.AutoRemove = dir, o.AutoRemove
	l, err := r.st.CreateLocked(ctx, rec.ID, rec)
	if err != nil {
		if errors.Is(err, ErrExists) {
			return Info{}, fmt.Errorf("sandbox %q: %w", rec.ID, ErrExists)
		}
		return Info{}, fmt.Errorf("restore into sandbox %q: %w", rec.ID, err)
	}
	defer l.Unlock()
	if o.CopyOwnedDrives {
		cd, err := copyDir(l, rec)
		if err == nil {
			err = copyOwnedDrives(cd, rec, man.info(dir))
		}
		if err == nil {
			err = l.Save(rec)
		}
		if err != nil {
			return Info{}, errors.Join(fmt.Errorf("restore into sandbox %q: %w", rec.ID, err), removeCopyDir(l.Dir(), rec), l.Remove())
		}
	}
	if rec.Spec.Agent {
		if err := restoredToken(l.Dir(), dir); err != nil {
			return Info{}, errors.Join(fmt.Errorf("restore into sandbox %q: %w", rec.ID, err), removeCopyDir(l.Dir(), rec), l.Remove())
		}
	}
	r.log.Debug("recorded sandbox", "sandbox", rec.ID, "status", rec.Status, "snapshot", dir)
	return r.info(ctx, rec), nil
}

// copyOwnedDrives gives the sandbox rec a copy, in its copy directory dir
// (copyDir), of every writable drive the snapshot owns, and points rec's
// spec at them.
func copyOwnedDrives(dir string, rec *record, snap SnapshotInfo) error {
	own := func(p *string) error {
		for _, d := range snap.Drives {
			if d.Owned && !d.ReadOnly && d.Path == *p {
				dst := filepath.Join(dir, filepath.Base(d.Path))
				if err := copyFileSparse(d.Path, dst); err != nil {
					return fmt.Errorf("copy drive %q: %w", d.ID, err)
				}
				*p = dst
				return nil
			}
		}
		return nil
	}
	if rec.Spec.Rootfs != nil {
		if err := own(&rec.Spec.Rootfs.Path); err != nil {
			return err
		}
	}
	for i := range rec.Spec.Drives {
		if err := own(&rec.Spec.Drives[i].Path); err != nil {
			return err
		}
	}
	return nil
}

// readManifest reads the manifest of the snapshot directory dir (an
// absolute path) and resolves the paths in it against dir.
func readManifest(dir string) (*manifest, error) {
	path := filepath.Join(dir, manifestName)
	b, err := store.ReadFile(path, store.MaxManifestSize)
	if errors.Is(err, store.ErrTooLarge) {
		return nil, fmt.Errorf("snapshot manifest: %w: %w", ErrCorrupt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a kindling snapshot directory: %w", ErrInvalidSpec, dir, err)
	}
	man, err := decodeManifest(path, b)
	if err != nil {
		return nil, err
	}
	if err := man.resolve(dir); err != nil {
		return nil, fmt.Errorf("snapshot manifest %s: %w", path, err)
	}
	return man, nil
}

// decodeManifest decodes the content b of the manifest file path, as
// written: paths are not resolved.
func decodeManifest(path string, b []byte) (*manifest, error) {
	var man manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, fmt.Errorf("snapshot manifest %s: %w: %w", path, ErrCorrupt, err)
	}
	if man.Version < oldestManifestVersion || man.Version > manifestVersion {
		return nil, fmt.Errorf("snapshot manifest %s: format version %d, this kindling reads %d to %d: %w", path, man.Version, oldestManifestVersion, manifestVersion, ErrNotSupported)
	}
	return &man, nil
}

// errOutside: a manifest names one of the snapshot's own files outside
// its directory.
var errOutside = errdefs.New(errdefs.ErrCorrupt, "names a file outside the snapshot directory")

// ownPaths are the paths of the manifest that may name files the snapshot
// holds: those are written relative to its directory. Those of
// Snapshot.Config's drives and Snapshot.Pool's placeholders are in the
// directory only for the drives it owns, which the state file records
// relocated (version 5); the others stay as Firecracker recorded them
// (they are compared, and drives switched, on restore).
func (man *manifest) ownPaths() []*string {
	ps := []*string{&man.Kernel, &man.Spec.Kernel, &man.Spec.Initrd}
	if man.Spec.Rootfs != nil {
		ps = append(ps, &man.Spec.Rootfs.Path)
	}
	for i := range man.Spec.Drives {
		ps = append(ps, &man.Spec.Drives[i].Path)
	}
	for i := range man.Snapshot.Config.Drives {
		ps = append(ps, &man.Snapshot.Config.Drives[i].Path)
	}
	for i := range man.Snapshot.Pool {
		ps = append(ps, &man.Snapshot.Pool[i].Placeholder)
	}
	return ps
}

// relativeTo rewrites the paths of files inside dir relative to it, so
// that the snapshot directory can be moved or copied.
func (man *manifest) relativeTo(dir string) {
	rel := func(p *string) {
		if *p == "" || !filepath.IsAbs(*p) {
			return
		}
		if r, err := filepath.Rel(dir, *p); err == nil && filepath.IsLocal(r) {
			*p = r
		}
	}
	rel(&man.Snapshot.SnapshotPath)
	rel(&man.Snapshot.MemPath)
	for _, p := range man.ownPaths() {
		rel(p)
	}
}

// resolve makes the manifest's relative paths absolute under dir. A
// relative path must stay inside dir, and the state and memory files must
// be in it: a manifest naming them elsewhere is refused (matching
// ErrCorrupt), whatever its version.
func (man *manifest) resolve(dir string) error {
	var errs []error
	abs := func(p *string) {
		if *p == "" || filepath.IsAbs(*p) {
			return
		}
		if !filepath.IsLocal(*p) {
			errs = append(errs, fmt.Errorf("%q %w", *p, errOutside))
			return
		}
		*p = filepath.Join(dir, *p)
	}
	for _, p := range []*string{&man.Snapshot.SnapshotPath, &man.Snapshot.MemPath} {
		if *p == "" {
			errs = append(errs, fmt.Errorf("%w: no snapshot file named", ErrCorrupt))
			continue
		}
		if filepath.IsAbs(*p) {
			if man.Version >= 3 {
				errs = append(errs, fmt.Errorf("%q %w", *p, errOutside))
				continue
			}
			// Versions 1 and 2 named every file absolutely.
			if r, err := filepath.Rel(dir, *p); err != nil || !filepath.IsLocal(r) {
				errs = append(errs, fmt.Errorf("%q %w (was the directory moved? take the snapshot again)", *p, errOutside))
			}
			continue
		}
		abs(p)
	}
	for _, p := range man.ownPaths() {
		abs(p)
	}
	return errors.Join(errs...)
}

// encodeManifest is the content of a manifest file.
func encodeManifest(man *manifest) ([]byte, error) {
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode snapshot manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// writeManifest writes man into the snapshot directory dir, atomically,
// with the paths of the files dir holds relative to it.
func writeManifest(dir string, man *manifest) error {
	rel := *man
	rel.Spec = cloneSpec(man.Spec)
	rel.Snapshot.Config.Drives = slices.Clone(man.Snapshot.Config.Drives)
	rel.Snapshot.Pool = slices.Clone(man.Snapshot.Pool)
	rel.relativeTo(dir)
	b, err := encodeManifest(&rel)
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(dir, manifestName, b)
}

// cloneSpec copies s deeply enough that its paths can be rewritten
// without touching s.
func cloneSpec(s Spec) Spec {
	if s.Rootfs != nil {
		r := *s.Rootfs
		s.Rootfs = &r
	}
	s.Drives = append([]Disk(nil), s.Drives...)
	return s
}
