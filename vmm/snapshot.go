package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
)

// File names CreateSnapshot uses inside SnapshotOptions.Dir.
const (
	SnapshotStateFile = "snapshot.state"
	SnapshotMemFile   = "snapshot.mem"
)

// SnapshotOptions says where and how to write a snapshot.
type SnapshotOptions struct {
	// Dir, when set, receives SnapshotStateFile and SnapshotMemFile (it is
	// created if missing). Otherwise SnapshotPath and MemPath are required.
	Dir string
	// SnapshotPath is the microVM state file; MemPath the guest memory file.
	SnapshotPath, MemPath string
	// Diff writes only the memory pages changed since the last snapshot
	// (the release and machine must track dirty pages).
	Diff bool
	// PauseAround lets CreateSnapshot take a running microVM: it pauses it
	// first and resumes it afterwards (even when the snapshot fails).
	// Without it the microVM must already be paused, else the error is a
	// *StateError.
	PauseAround bool
	// Relocate records drives (or placeholder pool slots, by slot ID) in the
	// snapshot at other host paths, so that a restore opens those files
	// instead of the live ones: each file must already hold the drive's
	// content (copy it while the microVM is paused). CreateSnapshot switches
	// each drive to its new path for the snapshot and back afterwards, even
	// when the snapshot fails. For a jailed VMM only the recorded host
	// paths change (its drives are /drive-<ID> in any jail); without a
	// jail the state file records them by a name relative to the run
	// directory (see Snapshot.Relocated), so the snapshot's files can move.
	Relocate []DriveOverride
}

// Snapshot is a written snapshot and what Restore needs to know about the
// microVM it was taken from.
type Snapshot struct {
	SnapshotPath string `json:"snapshot_path"`
	MemPath      string `json:"mem_path"`
	Diff         bool   `json:"diff,omitempty"`
	// Firecracker is the release that wrote it; snapshots load only into
	// the same release.
	Firecracker string `json:"firecracker"`
	// Config is the configuration of the snapshotted Machine (its devices
	// must be at the same host paths when restoring).
	Config Config `json:"config"`
	// Pool is the placeholder pool at the time of the snapshot.
	Pool []Slot `json:"pool,omitempty"`
	// Relocated are the drives and placeholder slots (by ID) that the
	// state file records not at their host paths in Config and Pool but
	// at RestoreLinkDir/<ID>, relative to the working directory of the
	// Firecracker that loads it (its RunDir): a restore links that name,
	// in its own run directory, to the file each is to use, so a snapshot
	// whose files are moved still loads. Set for SnapshotOptions.Relocate
	// of a VMM without a jail.
	Relocated []string `json:"relocated,omitempty"`
	// VsockName, when set, is the vsock socket's path as the state file
	// records it: relative to the run directory of the Firecracker that
	// loads it. Every restore then binds a socket of its own, in its own
	// run directory, on any release; without it, a restore binds the
	// recorded Config.Vsock.Path unless the release can override it
	// (≥ 1.16).
	VsockName string `json:"vsock_name,omitempty"`
}

// VsockPerRestore reports whether every VMM restored from the snapshot
// gets a vsock socket of its own on any Firecracker release: the state
// file names the socket relative to the run directory (VsockName) or in
// the jail. Otherwise only a release that overrides the socket on load
// (fcapi.FeatureVsockOverride) keeps restores off the recorded one.
func (s Snapshot) VsockPerRestore() bool {
	return s.Config.Vsock == nil || s.VsockName != "" || s.Config.Jailer != nil
}

// RestoreLinkDir is the directory, in a VMM's run directory, of the links
// through which Firecracker opens relocated drives (Snapshot.Relocated)
// while it takes or loads a snapshot. It is removed afterwards.
const RestoreLinkDir = ".restore"

// restoreLinkName is the path, relative to a VMM's run directory, at which
// a snapshot records relocated drive id.
func restoreLinkName(id string) string { return RestoreLinkDir + "/" + id }

// linkRelocated makes, in runDir, the link of each drive of ovs to its
// file, for Firecracker to open by the relative name the snapshot
// records; it returns the overrides that name the links. The caller
// removes RestoreLinkDir.
func linkRelocated(runDir string, ovs []DriveOverride) ([]DriveOverride, error) {
	dir := filepath.Join(runDir, RestoreLinkDir)
	// Left by a crash, or planted: nothing in it is of use.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("link relocated drives: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("link relocated drives: %w", err)
	}
	out := make([]DriveOverride, 0, len(ovs))
	for _, o := range ovs {
		if !validSnapshotID(o.ID) {
			return nil, &ConfigError{Field: "relocated", Value: strconv.Quote(o.ID), Problem: "not a drive ID"}
		}
		target, err := filepath.Abs(o.Path)
		if err != nil {
			return nil, fmt.Errorf("link relocated drive %q: %w", o.ID, err)
		}
		if err := os.Symlink(target, filepath.Join(dir, o.ID)); err != nil {
			return nil, fmt.Errorf("link relocated drive %q: %w", o.ID, err)
		}
		out = append(out, DriveOverride{ID: o.ID, Path: restoreLinkName(o.ID)})
	}
	return out, nil
}

// validSnapshotID reports whether id, read from a snapshot, can name a
// file of its own in RestoreLinkDir.
func validSnapshotID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\\\x00")
}

// CreateSnapshot writes a snapshot of the paused microVM (see
// SnapshotOptions.PauseAround). The VMM keeps running afterwards.
func (m *Machine) CreateSnapshot(ctx context.Context, o SnapshotOptions) (snap Snapshot, err error) {
	ctx, span := m.startSpan(ctx, "vmm.CreateSnapshot", attribute.Bool("snapshot.diff", o.Diff))
	defer func() { endSpan(span, err) }()

	statePath, memPath := o.SnapshotPath, o.MemPath
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return Snapshot{}, fmt.Errorf("create snapshot: %w", err)
		}
		statePath, memPath = filepath.Join(o.Dir, SnapshotStateFile), filepath.Join(o.Dir, SnapshotMemFile)
	}
	if statePath == "" || memPath == "" {
		return Snapshot{}, &ConfigError{Field: "snapshot", Problem: "no destination", Fix: "set Dir, or SnapshotPath and MemPath"}
	}
	for _, p := range []*string{&statePath, &memPath} {
		if a, err := filepath.Abs(*p); err == nil {
			*p = a
		}
	}

	want := []phase{phasePaused}
	if o.PauseAround {
		want = append(want, phaseRunning)
	}
	client, err := m.live("create snapshot", want...)
	if err != nil {
		return Snapshot{}, err
	}
	m.mu.Lock()
	wasRunning := m.phaseLocked() == phaseRunning
	m.mu.Unlock()
	if wasRunning {
		if err := m.Pause(ctx); err != nil {
			return Snapshot{}, fmt.Errorf("create snapshot: %w", err)
		}
		defer func() {
			if rerr := m.Resume(context.WithoutCancel(ctx)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resume after snapshot: %w", rerr))
			}
		}()
	}

	typ := fcapi.SnapshotFull
	if o.Diff {
		typ = fcapi.SnapshotDiff
	}
	// A jailed Firecracker writes inside its jail; the files are moved out
	// afterwards.
	apiState, apiMem := statePath, memPath
	m.mu.Lock()
	jail := m.jail
	if jail != nil {
		jail.seq++
		apiState = fmt.Sprintf("/snapshot-%d.state", jail.seq)
		apiMem = fmt.Sprintf("/snapshot-%d.mem", jail.seq)
	}
	m.mu.Unlock()
	// A jailed VMM's snapshot names its drives by their in-jail paths,
	// which a jailed restore stages from the host paths the snapshot's
	// Config records: relocating them is recording the new host paths.
	//
	// Without a jail, the snapshot records each relocated drive at a name
	// relative to Firecracker's working directory, linked to the file for
	// the snapshot: a restore links that name, in its own run directory,
	// to the file it gives the drive, wherever the snapshot was moved.
	var relocated []string
	if len(o.Relocate) > 0 && jail == nil {
		m.mu.Lock()
		runDir := m.cfg.RunDir
		m.mu.Unlock()
		linkDir := filepath.Join(runDir, RestoreLinkDir)
		defer os.RemoveAll(linkDir)
		links, lerr := linkRelocated(runDir, o.Relocate)
		if lerr != nil {
			return Snapshot{}, fmt.Errorf("create snapshot: %w", lerr)
		}
		for _, l := range links {
			relocated = append(relocated, l.ID)
		}
		back, rerr := m.relocate(ctx, client, links)
		defer func() {
			// Switch back even if ctx ended: the VMM must keep its own files.
			if berr := m.patchDrives(context.WithoutCancel(ctx), client, back); berr != nil {
				err = errors.Join(err, fmt.Errorf("switch drives back after snapshot: %w", berr))
			}
		}()
		if rerr != nil {
			return Snapshot{}, fmt.Errorf("create snapshot: %w", rerr)
		}
	}
	if err := client.CreateSnapshot(ctx, fcapi.SnapshotCreate{
		SnapshotType: typ,
		SnapshotPath: apiState,
		MemFilePath:  apiMem,
	}); err != nil {
		if jail != nil {
			_ = os.Remove(filepath.Join(jail.layout.ChrootDir, apiState))
			_ = os.Remove(filepath.Join(jail.layout.ChrootDir, apiMem))
		}
		return Snapshot{}, fmt.Errorf("create snapshot: %w", err)
	}
	if jail != nil {
		for _, mv := range [][2]string{{apiState, statePath}, {apiMem, memPath}} {
			if err := moveOutOfJail(filepath.Join(jail.layout.ChrootDir, mv[0]), mv[1]); err != nil {
				return Snapshot{}, fmt.Errorf("create snapshot: %w", err)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg := m.cfg
	cfg.Console = nil
	cfg.Drives = append([]Drive(nil), cfg.Drives...)
	vsockName := ""
	if cfg.Vsock != nil && jail == nil {
		vsockName = m.vsockName
	}
	pool := copySlots(m.pool)
	for _, r := range o.Relocate {
		for i := range cfg.Drives {
			if cfg.Drives[i].ID == r.ID {
				cfg.Drives[i].Path = r.Path
			}
		}
		for i := range pool {
			if pool[i].ID == r.ID {
				pool[i].Placeholder = r.Path
			}
		}
	}
	return Snapshot{
		SnapshotPath: statePath,
		MemPath:      memPath,
		Diff:         o.Diff,
		Firecracker:  m.version.String(),
		Config:       cfg,
		Pool:         pool,
		Relocated:    relocated,
		VsockName:    vsockName,
	}, nil
}

// relocate switches the drives named in rel to their new paths and returns
// the overrides that switch back the ones it switched (also on error).
func (m *Machine) relocate(ctx context.Context, client *fcapi.Client, rel []DriveOverride) ([]DriveOverride, error) {
	m.mu.Lock()
	var back []DriveOverride
	var errs []error
	for _, r := range rel {
		cur := ""
		for _, d := range m.cfg.Drives {
			if d.ID == r.ID {
				cur = d.Path
			}
		}
		for _, s := range m.pool {
			if s.ID != r.ID {
				continue
			}
			if s.Drive != nil {
				errs = append(errs, &ConfigError{Field: "relocate", Value: strconv.Quote(r.ID), Problem: "the slot holds a hot-plugged drive", Fix: "detach it first"})
			}
			cur = m.placeholderInVMLocked(s)
		}
		if cur == "" {
			errs = append(errs, &ConfigError{Field: "relocate", Value: strconv.Quote(r.ID), Problem: "no such drive"})
		}
		back = append(back, DriveOverride{ID: r.ID, Path: cur})
	}
	m.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, r := range rel {
		if err := patchDrive(ctx, client, r); err != nil {
			return back[:i], err
		}
	}
	return back, nil
}

// patchDrives switches each drive of ovs to its path.
func (m *Machine) patchDrives(ctx context.Context, client *fcapi.Client, ovs []DriveOverride) error {
	var errs []error
	for _, o := range ovs {
		errs = append(errs, patchDrive(ctx, client, o))
	}
	return errors.Join(errs...)
}

func patchDrive(ctx context.Context, client *fcapi.Client, o DriveOverride) error {
	if err := client.PatchDrive(ctx, fcapi.PartialDrive{DriveID: o.ID, PathOnHost: o.Path}); err != nil {
		return fmt.Errorf("switch drive %q to %s: %w", o.ID, o.Path, err)
	}
	return nil
}

// moveOutOfJail moves a file the jailed Firecracker wrote to dst on the
// host (renaming, or copying across filesystems) and gives it to the
// calling user.
func moveOutOfJail(src, dst string) error {
	if err := os.Rename(src, dst); err != nil {
		if rerr := removeIfExists(dst); rerr != nil {
			return rerr
		}
		if err := copyFile(src, dst); err != nil {
			return fmt.Errorf("move %s out of the jail: %w", src, err)
		}
		_ = os.Remove(src)
	}
	if err := os.Chown(dst, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("move %s out of the jail: %w", src, err)
	}
	return nil
}

// NetworkOverride gives a restored network interface another host tap.
type NetworkOverride struct {
	// IfaceID is the interface's ID in the snapshot.
	IfaceID string
	// TapName is the tap device to use instead.
	TapName string
}

// DriveOverride gives a drive (or a placeholder pool slot) of a snapshot
// another backing file.
type DriveOverride struct {
	// ID is the drive's ID in the snapshot (or the slot's: "pool0", …).
	ID string
	// Path is the host file to use instead.
	Path string
}

// RestoreConfig describes a VMM to restore from a snapshot.
type RestoreConfig struct {
	// Snapshot is the snapshot to load (from CreateSnapshot). Its files must
	// exist, as must every drive file at the path it had when snapshotted.
	Snapshot Snapshot
	// Config sets the new process: Firecracker, ID, RunDir, SocketPath,
	// LogPath, LogLevel, MetricsPath, ConsolePath, Console, WaitConsole and
	// Env are taken from here; the devices come from Snapshot.Config.
	// Firecracker and RunDir are required. Jailer must be set exactly when
	// the snapshotted VMM was jailed (the paths in a snapshot are the ones
	// Firecracker saw); a jailed restore also needs the snapshotted
	// Machine's kernel file to exist, as the jail is staged like a boot's.
	Config Config
	// Resume resumes the microVM once loaded; otherwise it stays paused.
	Resume bool
	// NetworkOverrides swap network interfaces' taps (Firecracker ≥ 1.12;
	// older releases give an error matching ErrNotSupported).
	NetworkOverrides []NetworkOverride
	// DriveOverrides switch drives to other backing files. Firecracker
	// opens the snapshotted paths when it loads a snapshot (those files must
	// exist), so the microVM is loaded paused, each drive is switched
	// (PATCH), and only then resumed: the guest never touches the
	// snapshotted files. A drive of Config.Drives whose ID is in the
	// snapshot with another path is switched the same way.
	DriveOverrides []DriveOverride
	// VsockOverride, when set, is the host socket of the restored vsock
	// device instead of the snapshotted one (Firecracker ≥ 1.16; older
	// releases give an error matching ErrNotSupported). When it is empty
	// and Config.Vsock names another socket than the snapshot's, that one
	// is used where the release can override, and the snapshotted path
	// otherwise.
	VsockOverride string
}

// Restore starts a new Firecracker process and loads rc.Snapshot into it.
// Firecracker exits when a load fails (a snapshot of another release, a
// missing drive): the error then carries its fault message and stderr, and
// nothing is left behind — no process, socket or file Restore created.
func Restore(ctx context.Context, rc RestoreConfig, opts ...Option) (m *Machine, err error) {
	cfg, err := restoreConfig(rc)
	if err != nil {
		return nil, err
	}
	m = newMachine(cfg, buildOptions(opts))
	ctx, span := m.startSpan(ctx, "vmm.Restore", attribute.String("snapshot.path", rc.Snapshot.SnapshotPath))
	defer func() { endSpan(span, err) }()

	m.mu.Lock()
	m.phase = phaseStarting
	m.pool = copySlots(rc.Snapshot.Pool)
	m.mu.Unlock()

	final := phasePaused
	if rc.Resume {
		final = phaseRunning
	}
	drives := driveOverrides(rc)
	if rc.Config.Jailer != nil {
		// restoreConfig staged the new files at the drives' in-jail
		// paths: nothing to switch after the load.
		drives = nil
	}
	// Relocated drives are loaded through links in the run directory and
	// then switched to their files, so that the VMM holds no name that is
	// gone once the links are.
	relocated := relocatedTargets(rc)
	for _, o := range relocated {
		if !slices.ContainsFunc(drives, func(d DriveOverride) bool { return d.ID == o.ID }) {
			drives = append(drives, o)
		}
	}
	if len(relocated) > 0 {
		defer os.RemoveAll(filepath.Join(cfg.RunDir, RestoreLinkDir))
	}
	// The drives are switched while the loaded microVM is paused.
	resumeOnLoad := rc.Resume && len(drives) == 0
	vsockPath := ""
	statePath, memPath := rc.Snapshot.SnapshotPath, rc.Snapshot.MemPath
	steps := func() []step {
		return []step{
			{name: "check-release", fn: func(ctx context.Context, c *fcapi.Client) (err error) {
				vsockPath, err = checkRestore(ctx, c, rc)
				return err
			}},
			{name: "stage-jail", fn: func(context.Context, *fcapi.Client) (err error) {
				statePath, memPath, err = m.stageRestore(rc.Snapshot)
				return err
			}},
			{name: "metrics", fn: m.stepMetrics},
			{name: "link-relocated", fn: func(context.Context, *fcapi.Client) error {
				if len(relocated) == 0 {
					return nil
				}
				_, err := linkRelocated(cfg.RunDir, relocated)
				return err
			}},
			{name: "load-snapshot", fatal: true, fn: func(ctx context.Context, c *fcapi.Client) error {
				load := fcapi.SnapshotLoad{
					SnapshotPath: statePath,
					MemBackend:   fcapi.MemoryBackend{BackendType: fcapi.MemoryBackendFile, BackendPath: memPath},
					ResumeVM:     resumeOnLoad,
				}
				for _, o := range rc.NetworkOverrides {
					load.NetworkOverrides = append(load.NetworkOverrides, fcapi.NetworkOverride{IfaceID: o.IfaceID, HostDevName: o.TapName})
				}
				vsockName := ""
				if rc.Snapshot.Config.Vsock != nil && cfg.Jailer == nil {
					vsockName = rc.Snapshot.VsockName
				}
				if vsockPath != "" {
					var apiPath string
					apiPath, vsockName = runDirPath(&cfg, vsockPath)
					load.VsockOverride = &fcapi.VsockOverride{UDSPath: apiPath}
					m.mu.Lock()
					if m.cfg.Vsock != nil {
						v := *m.cfg.Vsock
						v.Path = vsockPath
						m.cfg.Vsock = &v
					}
					m.mu.Unlock()
				}
				if err := c.LoadSnapshot(ctx, load); err != nil {
					return err
				}
				m.mu.Lock()
				m.vsockName = vsockName
				m.mu.Unlock()
				return nil
			}},
			{name: "drive-overrides", fn: func(ctx context.Context, c *fcapi.Client) error {
				if err := m.patchDrives(ctx, c, drives); err != nil {
					return err
				}
				m.applyDriveOverrides(drives)
				if rc.Resume && !resumeOnLoad {
					if err := c.Resume(ctx); err != nil {
						return fmt.Errorf("resume: %w", err)
					}
				}
				return nil
			}},
		}
	}
	if err := m.bringUp(ctx, steps, final); err != nil {
		return nil, fmt.Errorf("restore %s: %w", rc.Snapshot.SnapshotPath, err)
	}
	return m, nil
}

// driveOverrides returns rc.DriveOverrides plus a switch for every drive of
// rc.Config.Drives the snapshot has at another path.
func driveOverrides(rc RestoreConfig) []DriveOverride {
	out := append([]DriveOverride(nil), rc.DriveOverrides...)
	explicit := map[string]bool{}
	for _, o := range rc.DriveOverrides {
		explicit[o.ID] = true
	}
	for _, d := range rc.Config.Drives {
		if explicit[d.ID] || d.Path == "" {
			continue
		}
		for _, sd := range rc.Snapshot.Config.Drives {
			if sd.ID == d.ID && sd.Path != d.Path {
				out = append(out, DriveOverride{ID: d.ID, Path: d.Path})
			}
		}
	}
	return out
}

// relocatedTargets returns, for a restore without a jail, the file each
// drive or slot the snapshot records relocated is to use: its override's,
// else the one the snapshot names.
func relocatedTargets(rc RestoreConfig) []DriveOverride {
	if rc.Config.Jailer != nil || len(rc.Snapshot.Relocated) == 0 {
		return nil
	}
	ovs := driveOverrides(rc)
	var out []DriveOverride
	for _, id := range rc.Snapshot.Relocated {
		target := ""
		for _, d := range rc.Snapshot.Config.Drives {
			if d.ID == id {
				target = d.Path
			}
		}
		for _, s := range rc.Snapshot.Pool {
			if s.ID == id {
				target = s.Placeholder
			}
		}
		for _, o := range ovs {
			if o.ID == id {
				target = o.Path
			}
		}
		out = append(out, DriveOverride{ID: id, Path: target})
	}
	return out
}

// applyDriveOverrides records switched drives in the Machine's config and
// pool.
func (m *Machine) applyDriveOverrides(ovs []DriveOverride) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg.Drives = append([]Drive(nil), m.cfg.Drives...)
	for _, o := range ovs {
		for i := range m.cfg.Drives {
			if m.cfg.Drives[i].ID == o.ID {
				m.cfg.Drives[i].Path = o.Path
			}
		}
		for i := range m.pool {
			if m.pool[i].ID == o.ID && m.pool[i].Drive == nil {
				m.pool[i].Placeholder = o.Path
			}
		}
	}
}

// restoreConfig builds the restored Machine's Config and checks what can be
// checked before spawning.
func restoreConfig(rc RestoreConfig) (Config, error) {
	snap := rc.Snapshot
	var errs []error
	for _, f := range []struct{ field, path string }{
		{"snapshot.snapshot_path", snap.SnapshotPath},
		{"snapshot.mem_path", snap.MemPath},
	} {
		if f.path == "" {
			errs = append(errs, &ConfigError{Field: f.field, Problem: "required"})
		} else if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, &ConfigError{Field: f.field, Value: strconv.Quote(f.path), Problem: errdefs.PathProblem(err)})
		}
	}
	if (rc.Config.Jailer == nil) != (snap.Config.Jailer == nil) {
		what := "was not jailed: restore it without the jailer"
		if snap.Config.Jailer != nil {
			what = "was jailed: restore it with Config.Jailer set"
		}
		errs = append(errs, &ConfigError{Field: "jailer", Problem: "the snapshotted VMM " + what})
	}
	cfg := snap.Config
	p := rc.Config
	cfg.Firecracker, cfg.ID, cfg.RunDir, cfg.SocketPath = p.Firecracker, p.ID, p.RunDir, p.SocketPath
	cfg.LogPath, cfg.LogLevel, cfg.MetricsPath = p.LogPath, p.LogLevel, p.MetricsPath
	cfg.ConsolePath, cfg.Console, cfg.WaitConsole, cfg.Env = p.ConsolePath, p.Console, p.WaitConsole, p.Env
	// Nothing in a snapshot chooses a program, a jail or a namespace: the
	// executable, the jailer (its uid, gid and chroot base) and the network
	// namespace are the caller's, whatever the snapshot's Config says.
	cfg.Jailer, cfg.NetNS = p.Jailer, p.NetNS
	cfg.Placeholders = len(snap.Pool)
	if cfg.Jailer != nil {
		// A jailed Firecracker's snapshot names its drives /drive-<ID>,
		// whatever host file is staged there: a drive given at another
		// path is staged from that path instead of being switched.
		cfg.Drives = append([]Drive(nil), cfg.Drives...)
		for _, o := range driveOverrides(rc) {
			for i := range cfg.Drives {
				if cfg.Drives[i].ID == o.ID {
					cfg.Drives[i].Path = o.Path
				}
			}
		}
	}
	relocated := map[string]string{}
	for _, o := range relocatedTargets(rc) {
		relocated[o.ID] = o.Path
		if !validSnapshotID(o.ID) || o.Path == "" {
			errs = append(errs, &ConfigError{Field: "snapshot.relocated", Value: strconv.Quote(o.ID), Problem: "the snapshot has no such drive"})
		}
	}
	if len(relocated) > 0 {
		// Loaded through links to the files they are to use.
		cfg.Drives = append([]Drive(nil), cfg.Drives...)
		for i := range cfg.Drives {
			if p, ok := relocated[cfg.Drives[i].ID]; ok {
				cfg.Drives[i].Path = p
			}
		}
	}
	if cfg.Vsock != nil && snap.VsockName != "" && cfg.Jailer == nil {
		// The state file names the socket relative to the run directory:
		// the restored VMM binds it in its own.
		if !filepath.IsLocal(snap.VsockName) {
			errs = append(errs, &ConfigError{Field: "snapshot.vsock_name", Value: strconv.Quote(snap.VsockName), Problem: "not a path inside the run directory"})
		}
		v := *cfg.Vsock
		v.Path = filepath.Join(p.RunDir, snap.VsockName)
		cfg.Vsock = &v
	}
	if cfg.Vsock != nil && p.Vsock != nil && p.Vsock.Path != "" && p.Vsock.Path != cfg.Vsock.Path {
		// The caller's socket, which the restore asks for as an override
		// where the release has them: launch must check that one, not the
		// snapshot's, which the snapshotted VMM may still be serving (a
		// template's source, while its clones start).
		v := *cfg.Vsock
		v.Path = p.Vsock.Path
		cfg.Vsock = &v
	}
	cfg = cfg.withDefaults()
	// The snapshot's devices need not validate again (the kernel is not
	// read): check only what the new process needs.
	if cfg.Firecracker == "" {
		errs = append(errs, &ConfigError{Field: "firecracker", Problem: "required", Fix: "give the path of the firecracker executable"})
	} else if _, err := os.Stat(cfg.Firecracker); err != nil {
		errs = append(errs, &ConfigError{Field: "firecracker", Value: strconv.Quote(cfg.Firecracker), Problem: errdefs.PathProblem(err)})
	}
	if cfg.RunDir == "" {
		errs = append(errs, &ConfigError{Field: "run_dir", Problem: "required", Fix: "give a directory for the API socket and Firecracker's log"})
	}
	if len(cfg.SocketPath) > maxSocketPath {
		errs = append(errs, &ConfigError{Field: "socket_path", Value: strconv.Quote(cfg.SocketPath),
			Problem: fmt.Sprintf("%d bytes, over the %d a unix socket path can hold", len(cfg.SocketPath), maxSocketPath)})
	}
	for _, d := range cfg.Drives {
		if _, err := os.Stat(d.Path); err != nil {
			errs = append(errs, &ConfigError{Field: "snapshot.drives", Value: strconv.Quote(d.Path), Problem: errdefs.PathProblem(err),
				Fix: "a restored VM needs its drives at the paths they had"})
		}
	}
	known := map[string]bool{}
	for _, d := range cfg.Drives {
		known[d.ID] = true
	}
	for _, s := range snap.Pool {
		known[s.ID] = true
	}
	for _, o := range driveOverrides(rc) {
		if !known[o.ID] {
			errs = append(errs, &ConfigError{Field: "drive_overrides", Value: strconv.Quote(o.ID), Problem: "the snapshot has no such drive"})
		} else if _, err := os.Stat(o.Path); err != nil {
			errs = append(errs, &ConfigError{Field: "drive_overrides", Value: strconv.Quote(o.Path), Problem: errdefs.PathProblem(err)})
		}
	}
	if len(rc.DriveOverrides) > 0 && cfg.Jailer != nil {
		errs = append(errs, &ConfigError{Field: "drive_overrides", Problem: "not supported for a jailed restore"})
	}
	for _, s := range snap.Pool {
		if cfg.Jailer != nil {
			if s.Drive != nil {
				if _, err := os.Stat(s.Drive.Path); err != nil {
					errs = append(errs, &ConfigError{Field: "snapshot.pool", Value: strconv.Quote(s.Drive.Path), Problem: errdefs.PathProblem(err),
						Fix: "a restored VM needs its hot-plugged drives at the paths they had"})
				}
			}
			continue // the placeholders are made anew in the jail
		}
		ph := s.Placeholder
		if p, ok := relocated[s.ID]; ok {
			ph = p
		}
		if _, err := os.Stat(ph); err != nil {
			errs = append(errs, &ConfigError{Field: "snapshot.pool", Value: strconv.Quote(ph), Problem: errdefs.PathProblem(err),
				Fix: "keep the snapshotted VM's placeholder files until its snapshots are restored"})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("restore: %w", err)
	}
	return cfg, nil
}

// checkRestore refuses, before loading, a snapshot written by another
// release and overrides the running release cannot apply. It returns the
// vsock socket path to override the snapshot's with, if any.
func checkRestore(ctx context.Context, c *fcapi.Client, rc RestoreConfig) (vsockPath string, err error) {
	ver, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	if rc.Snapshot.Firecracker != "" {
		sv, err := fcapi.ParseVersion(rc.Snapshot.Firecracker)
		if err == nil && (sv.Major != ver.Major || sv.Minor != ver.Minor) {
			return "", &ConfigError{Field: "snapshot", Value: strconv.Quote(rc.Snapshot.SnapshotPath),
				Problem: fmt.Sprintf("written by Firecracker %s, cannot be loaded by %s", sv, ver),
				Fix:     "restore it with the release that wrote it"}
		}
	}
	caps := fcapi.CapabilitiesOf(ver)
	if len(rc.NetworkOverrides) > 0 {
		if err := caps.Check(fcapi.FeatureNetworkOverrides); err != nil {
			return "", &NotSupportedError{Op: "restore with network overrides", Reason: err.Error()}
		}
	}
	snapVsock := rc.Snapshot.Config.Vsock
	if rc.VsockOverride != "" {
		if snapVsock == nil {
			return "", &ConfigError{Field: "vsock_override", Value: strconv.Quote(rc.VsockOverride), Problem: "the snapshot has no vsock device"}
		}
		if err := caps.Check(fcapi.FeatureVsockOverride); err != nil {
			return "", &NotSupportedError{Op: "restore with a vsock override", Reason: err.Error()}
		}
		return rc.VsockOverride, nil
	}
	if snapVsock == nil || rc.Config.Vsock == nil || rc.Config.Vsock.Path == "" || caps.Check(fcapi.FeatureVsockOverride) != nil {
		// The socket is the one the snapshot names (in this run
		// directory when it names it relative to it, see VsockName).
		return "", nil
	}
	if rc.Config.Jailer != nil {
		// Jailed, Firecracker sees the socket at its in-jail path, which
		// each jail has of its own: override only a change of that path.
		if p := "/" + filepath.Base(rc.Config.Vsock.Path); p != "/"+filepath.Base(snapVsock.Path) {
			return p, nil
		}
		return "", nil
	}
	snapPath := snapVsock.Path
	if rc.Snapshot.VsockName != "" {
		snapPath = filepath.Join(rc.Config.RunDir, rc.Snapshot.VsockName)
	}
	if rc.Config.Vsock.Path != snapPath {
		return rc.Config.Vsock.Path, nil
	}
	return "", nil
}

// stageRestore puts in the jail of a jailed restore what the snapshot
// refers to besides the drives stageJail staged: the snapshot files, new
// placeholder files and the hot-plugged drives, at the in-jail paths the
// snapshotted Firecracker used. It returns the in-jail snapshot paths; for
// a VMM without a jail it changes nothing.
func (m *Machine) stageRestore(snap Snapshot) (statePath, memPath string, err error) {
	m.mu.Lock()
	jail := m.jail
	m.mu.Unlock()
	if jail == nil {
		return snap.SnapshotPath, snap.MemPath, nil
	}
	uid, gid := m.cfg.Jailer.UID, m.cfg.Jailer.GID
	if statePath, err = jail.layout.stageFile(snap.SnapshotPath, "/snapshot.state", uid, gid, false); err != nil {
		return "", "", err
	}
	if memPath, err = jail.layout.stageFile(snap.MemPath, "/snapshot.mem", uid, gid, false); err != nil {
		return "", "", err
	}
	pool := copySlots(snap.Pool)
	for i, s := range pool {
		host, _, err := m.makePlaceholder(s.ID)
		if err != nil {
			return "", "", fmt.Errorf("placeholder %q: %w", s.ID, err)
		}
		pool[i].Placeholder = host
		if s.Drive != nil && s.AttachedPath != "" {
			if _, err := jail.layout.stageFile(s.Drive.Path, s.AttachedPath, uid, gid, !s.Drive.ReadOnly); err != nil {
				return "", "", err
			}
		}
	}
	m.mu.Lock()
	m.pool = pool
	m.mu.Unlock()
	return statePath, memPath, nil
}
