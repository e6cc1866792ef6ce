package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// ErrTemplateCorrupt: a template's files are missing or do not match the
// checksums of its manifest. It matches ErrCorrupt.
var ErrTemplateCorrupt = errdefs.New(errdefs.ErrCorrupt, "template corrupt")

// Template store layout: <root>/.templates/<name>/ holds the snapshot files,
// the template's own copies of the source's writable drives, placeholder
// files and kernel, a sandbox snapshot manifest (so that a clone is a
// sandbox restored from the template directory) and the template manifest,
// written last: a directory without it is a template being created, or one
// whose creation crashed.
const (
	templatesDir         = ".templates"
	templateManifestName = "kindling-template.json"
	templateFormat       = 1
	templateKernelName   = "kernel"
)

// TemplateOptions are the options of CreateTemplate.
type TemplateOptions struct {
	// Stop ends the source sandbox once the template is taken, instead of
	// resuming it. Its paused VMM is killed: its drives then hold what the
	// template's copies hold, and its guest state lives on in the template.
	Stop bool
}

// CloneOptions name the sandbox RunTemplate starts.
type CloneOptions struct {
	// ID of the new sandbox; empty for a random one.
	ID string
	// Net replaces the template's network interfaces, one for one; nil
	// gives the clone interfaces like the template's (new taps where the
	// template's source had kindling create them).
	Net []Net
	// AutoRemove removes the clone once its VMM exits.
	AutoRemove bool
	// Verify re-hashes every file of the template before the clone starts
	// (the memory file costs about 1 ms per MiB). Without it a clone checks
	// that each file has the size and modification time recorded when the
	// template was made, and hashes only the small microVM state file.
	Verify bool
	// Firecracker is the executable the clone runs; empty for the one the
	// template was made with. It must be the same release.
	Firecracker string
}

// Template describes a template: a snapshot of a sandbox that new
// sandboxes (clones) start from without booting.
type Template struct {
	Format    int       `json:"format"`
	Name      string    `json:"name"`
	Dir       string    `json:"dir"`
	CreatedAt time.Time `json:"created_at"`
	// From is the sandbox the template was taken from.
	From string `json:"from"`
	// Firecracker is the release that wrote the snapshot, FirecrackerPath
	// its executable and FirecrackerStamp that file's stamp: clones need
	// the same release, and the same unchanged file is trusted to be it.
	Firecracker      string    `json:"firecracker"`
	FirecrackerPath  string    `json:"firecracker_path"`
	FirecrackerStamp FileStamp `json:"firecracker_stamp"`
	// SnapshotFormat is the snapshot data format version the release
	// reports (firecracker --snapshot-version), when it reports one.
	SnapshotFormat string `json:"snapshot_format,omitempty"`
	VCPUs          int    `json:"vcpus"`
	MemoryMiB      int    `json:"memory_mib"`
	SMT            bool   `json:"smt,omitempty"`
	// Drives are the source's drives: writable ones as the template's own
	// copies, read-only ones shared at their paths.
	Drives []TemplateDrive `json:"drives,omitempty"`
	// Net are the network interfaces; a clone gets its own taps.
	Net []TemplateNet `json:"net,omitempty"`
	// VsockCID is the vsock device's context ID, 0 without one.
	VsockCID uint32 `json:"vsock_cid,omitempty"`
	// Files are the files the template owns, with their checksums.
	Files []TemplateFile `json:"files"`
	// Clones are the sandboxes started from the template and not removed
	// (computed when read, not stored).
	Clones []string `json:"clones,omitempty"`
}

// TemplateDrive is a drive of a template.
type TemplateDrive struct {
	ID       string `json:"id"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Root     bool   `json:"root,omitempty"`
	// Copied is set when Path is the template's own frozen copy.
	Copied bool `json:"copied,omitempty"`
}

// TemplateNet is a network interface of a template.
type TemplateNet struct {
	IfaceID string `json:"iface_id"`
	Tap     string `json:"tap"`
	MAC     string `json:"mac"`
	// Auto is set when clones get taps of their own created for them.
	Auto bool `json:"auto,omitempty"`
}

// TemplateFile is a file a template owns.
type TemplateFile struct {
	Name   string    `json:"name"`
	SHA256 string    `json:"sha256"`
	Stamp  FileStamp `json:"stamp"`
}

// FileStamp is what the cheap check of a file compares: its size and
// modification time.
type FileStamp struct {
	Size    int64 `json:"size"`
	ModTime int64 `json:"mtime_ns"`
}

func stampOf(fi os.FileInfo) FileStamp {
	return FileStamp{Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
}

func (r *Runtime) templateDir(name string) (string, error) {
	if err := store.ValidateID(name); err != nil {
		return "", specError(fmt.Errorf("template name: %w", err))
	}
	return filepath.Join(r.st.Root(), templatesDir, name), nil
}

// lockTemplates takes the template store's lock, a flock on its directory:
// shared to start clones, exclusive to remove a template, so that no clone
// is recorded while its template goes away. Without a template store the
// error matches ErrNotFound.
func (r *Runtime) lockTemplates(name string, how int) (func(), error) {
	dir := filepath.Join(r.st.Root(), templatesDir)
	for {
		f, err := os.Open(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("template %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("template store: %w", err)
		}
		for {
			err = syscall.Flock(int(f.Fd()), how)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock the template store: %w", err)
		}
		// The last RemoveTemplate removes the directory: make sure the
		// locked one is still the store.
		held, herr := f.Stat()
		now, nerr := os.Stat(dir)
		if herr == nil && nerr == nil && os.SameFile(held, now) {
			return func() { f.Close() }, nil
		}
		f.Close()
	}
}

// CreateTemplate makes template name from the running (or paused) sandbox
// from: it pauses the sandbox, copies its writable drives into the
// template, writes a full snapshot that names those copies, and resumes it
// (or, with o.Stop, stops it). A failure leaves no template behind.
func (r *Runtime) CreateTemplate(ctx context.Context, name, from string, o TemplateOptions) (_ Template, err error) {
	ctx, span := r.tp.Tracer("kindling/sandbox").Start(ctx, "sandbox.CreateTemplate")
	defer span.End()
	tdir, err := r.templateDir(name)
	if err != nil {
		return Template{}, err
	}
	// A RemoveTemplate may remove the emptied store in between: retry.
	for range 3 {
		if err = os.MkdirAll(filepath.Dir(tdir), 0o700); err == nil {
			if err = os.Mkdir(tdir, 0o700); !errors.Is(err, os.ErrNotExist) {
				break
			}
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return Template{}, fmt.Errorf("create template %q: %w", name, ErrExists)
		}
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tdir)
			_ = os.Remove(filepath.Dir(tdir)) // if it was the only one
		}
	}()

	var man manifest
	var tpl Template
	err = r.withMachine(ctx, from, "make a template of", "sandbox.TemplateSnapshot", func(ctx context.Context, m *vmm.Machine, rec *record) (err error) {
		if rec.Spec.Jailer != "" {
			return &vmm.NotSupportedError{Op: "template of a jailed sandbox"}
		}
		switch perr := m.Pause(ctx); {
		case perr == nil:
			rec.Status = Paused
			if !o.Stop {
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
			return perr
		}
		// Copy what the snapshot will name while the guest cannot write.
		var rel []vmm.DriveOverride
		cfg := m.Config()
		for _, d := range cfg.Drives {
			if d.ReadOnly {
				continue
			}
			dst := filepath.Join(tdir, "drive-"+d.ID+".img")
			if err := copyFileSparse(d.Path, dst); err != nil {
				return fmt.Errorf("copy drive %q: %w", d.ID, err)
			}
			rel = append(rel, vmm.DriveOverride{ID: d.ID, Path: dst})
		}
		for _, s := range m.Pool() {
			if s.Drive != nil {
				return fmt.Errorf("hotplug slot %s holds %s: detach it first: %w", s.ID, s.Drive.Path, ErrInvalidState)
			}
			dst := filepath.Join(tdir, s.ID+".img")
			if err := copyFileSparse(s.Placeholder, dst); err != nil {
				return fmt.Errorf("copy placeholder %q: %w", s.ID, err)
			}
			rel = append(rel, vmm.DriveOverride{ID: s.ID, Path: dst})
		}
		kernel := filepath.Join(tdir, templateKernelName)
		if err := copyFileSparse(rec.Kernel, kernel); err != nil {
			return fmt.Errorf("copy kernel: %w", err)
		}
		snap, err := m.CreateSnapshot(ctx, vmm.SnapshotOptions{Dir: tdir, Relocate: rel})
		if err != nil {
			return err
		}
		spec := rec.Spec
		spec.Kernel, spec.Demo = kernel, "" // the template owns its kernel, demo or not
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
		man = manifest{Version: manifestVersion, CreatedAt: time.Now().UTC(), From: rec.ID, Spec: spec, Kernel: kernel, Taps: rec.Taps, Snapshot: snap}
		tpl = Template{
			Format: templateFormat, Name: name, Dir: tdir, CreatedAt: man.CreatedAt, From: rec.ID,
			Firecracker: snap.Firecracker, FirecrackerPath: spec.Firecracker,
			VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, SMT: spec.SMT, VsockCID: spec.VsockCID,
		}
		for _, d := range snap.Config.Drives {
			_, copied := moved[d.ID]
			tpl.Drives = append(tpl.Drives, TemplateDrive{ID: d.ID, Path: d.Path, ReadOnly: d.ReadOnly, Root: d.Root, Copied: copied})
		}
		for i, t := range rec.Taps {
			tpl.Net = append(tpl.Net, TemplateNet{IfaceID: fmt.Sprintf("eth%d", i), Tap: t.Name, MAC: t.MAC, Auto: t.Owned})
		}
		return nil
	})
	if err != nil {
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
	}
	if fi, err := os.Stat(tpl.FirecrackerPath); err == nil {
		tpl.FirecrackerStamp = stampOf(fi)
	}
	tpl.SnapshotFormat = askFirecracker(ctx, tpl.FirecrackerPath, "--snapshot-version")
	if err := r.finishTemplate(tdir, &man, &tpl); err != nil {
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
	}
	if o.Stop {
		if err := r.Kill(ctx, from); err != nil {
			return tpl, fmt.Errorf("template %q made; stop sandbox %q: %w", name, from, err)
		}
	}
	return tpl, nil
}

// finishTemplate hashes the template's files and writes its manifests.
func (r *Runtime) finishTemplate(tdir string, man *manifest, tpl *Template) error {
	ents, err := os.ReadDir(tdir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	files := make([]TemplateFile, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { files[i], errs[i] = hashFile(filepath.Join(tdir, n)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	tpl.Files = files
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(tdir, manifestName, b); err != nil {
		return err
	}
	tb, err := json.MarshalIndent(tpl, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(tdir, templateManifestName, tb)
}

func hashFile(path string) (TemplateFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return TemplateFile{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return TemplateFile{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return TemplateFile{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return TemplateFile{Name: filepath.Base(path), SHA256: hex.EncodeToString(h.Sum(nil)), Stamp: stampOf(fi)}, nil
}

func writeAtomic(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// askFirecracker runs the firecracker executable with flag and returns the
// first version it prints ("v8.0.0", "Firecracker v1.7.0"), "" if none.
func askFirecracker(ctx context.Context, fc, flag string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, fc, flag).Output()
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(out)) {
		if _, err := fcapi.ParseVersion(strings.TrimPrefix(f, "v")); err == nil {
			return strings.TrimPrefix(f, "v")
		}
	}
	return ""
}

// readTemplate reads template name's manifest.
func (r *Runtime) readTemplate(name string) (*Template, *manifest, error) {
	tdir, err := r.templateDir(name)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(filepath.Join(tdir, templateManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("template %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("template %q: %w", name, err)
	}
	var tpl Template
	if err := json.Unmarshal(b, &tpl); err != nil {
		return nil, nil, fmt.Errorf("template %q: manifest: %w: %w", name, err, ErrTemplateCorrupt)
	}
	if tpl.Format != templateFormat {
		return nil, nil, fmt.Errorf("template %q: manifest format %d, this kindling reads %d", name, tpl.Format, templateFormat)
	}
	tpl.Dir = tdir
	man, err := readManifest(tdir)
	if err != nil {
		return nil, nil, fmt.Errorf("template %q: %w: %w", name, err, ErrTemplateCorrupt)
	}
	return &tpl, man, nil
}

// checkFiles checks the template's files: all of them hashed when full,
// else the size and modification time of each, and the hash of the small
// microVM state file. Read-only drives shared with the source must exist.
func (t *Template) checkFiles(full bool) error {
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex // guards errs
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	for _, f := range t.Files {
		path := filepath.Join(t.Dir, f.Name)
		fi, err := os.Stat(path)
		if err != nil {
			fail(fmt.Errorf("file %s: %w", f.Name, err))
			continue
		}
		if !full && f.Name != vmm.SnapshotStateFile {
			if stampOf(fi) != f.Stamp {
				fail(fmt.Errorf("file %s was modified after the template was made (its size or modification time changed): verify the template to check it", f.Name))
			}
			continue
		}
		wg.Go(func() {
			got, err := hashFile(path)
			switch {
			case err != nil:
				fail(err)
			case got.SHA256 != f.SHA256:
				fail(fmt.Errorf("file %s: checksum %s, the manifest says %s", f.Name, got.SHA256[:12], f.SHA256[:12]))
			}
		})
	}
	wg.Wait()
	for _, d := range t.Drives {
		if !d.Copied {
			if _, err := os.Stat(d.Path); err != nil {
				errs = append(errs, fmt.Errorf("shared drive %q: %w", d.ID, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrTemplateCorrupt, err)
	}
	return nil
}

// VerifyTemplate re-hashes every file of template name and compares it to
// the manifest.
func (r *Runtime) VerifyTemplate(ctx context.Context, name string) error {
	tpl, _, err := r.readTemplate(name)
	if err != nil {
		return err
	}
	if err := tpl.checkFiles(true); err != nil {
		return fmt.Errorf("template %q: %w", name, err)
	}
	return nil
}

// checkRelease refuses a clone whose Firecracker cannot load the template.
// The executable the template was made with (same size and modification
// time) is trusted without running it; another one is asked its release.
// Either way the driver checks the running release again before loading.
func (t *Template) checkRelease(ctx context.Context, fc string) (fcapi.Version, error) {
	tv, err := fcapi.ParseVersion(t.Firecracker)
	if err != nil {
		return fcapi.Version{}, fmt.Errorf("%w: firecracker release %q: %w", ErrTemplateCorrupt, t.Firecracker, err)
	}
	fi, err := os.Stat(fc)
	if err != nil {
		return fcapi.Version{}, specError(fmt.Errorf("firecracker %s: %w", fc, err))
	}
	if fc == t.FirecrackerPath && stampOf(fi) == t.FirecrackerStamp {
		return tv, nil
	}
	v, err := fcapi.ParseVersion(askFirecracker(ctx, fc, "--version"))
	if err != nil {
		return fcapi.Version{}, specError(fmt.Errorf("%s --version tells no release: %w", fc, err))
	}
	same := v == tv
	if t.SnapshotFormat != "" {
		if f := askFirecracker(ctx, fc, "--snapshot-version"); f != "" {
			same = f == t.SnapshotFormat
		}
	}
	if !same {
		return fcapi.Version{}, fmt.Errorf("%w: template %q was made by Firecracker %s and cannot be loaded by %s (%s): use that release, or make the template again", ErrInvalidSpec, t.Name, tv, v, fc)
	}
	return v, nil
}

// RunTemplate starts a new sandbox, a clone, from template name: its VMM
// loads the template's snapshot — the guest memory file mapped privately,
// so clones share its pages copy-on-write — with its own copy of every
// writable drive, its own taps and vsock socket, and resumes. A clone that
// cannot start leaves nothing behind.
func (r *Runtime) RunTemplate(ctx context.Context, name string, o CloneOptions) (_ Info, err error) {
	ctx, span := r.tp.Tracer("kindling/sandbox").Start(ctx, "sandbox.RunTemplate")
	defer span.End()
	unlock, err := r.lockTemplates(name, syscall.LOCK_SH)
	if err != nil {
		return Info{}, err
	}
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	tpl, man, err := r.readTemplate(name)
	if err != nil {
		return Info{}, err
	}
	if err := tpl.checkFiles(o.Verify); err != nil {
		return Info{}, fmt.Errorf("template %q: %w", name, err)
	}
	spec := man.Spec
	spec.ID = o.ID
	spec.WaitConsole = ""
	if o.Firecracker != "" {
		spec.Firecracker = o.Firecracker
	}
	if err := absPath(&spec.Firecracker); err != nil {
		return Info{}, specError(err)
	}
	ver, err := tpl.checkRelease(ctx, spec.Firecracker)
	if err != nil {
		return Info{}, err
	}
	if o.Net != nil {
		if len(o.Net) != len(tpl.Net) {
			return Info{}, fmt.Errorf("%w: template %q has %d network interfaces: give as many, or none", ErrInvalidSpec, name, len(tpl.Net))
		}
		spec.Net = o.Net
	}
	for i, n := range spec.Net {
		if !n.Auto && i < len(tpl.Net) && n.Tap == tpl.Net[i].Tap {
			return Info{}, fmt.Errorf("%w: template %q uses tap %q, which a clone cannot share: give the clone its own interfaces (auto, or another tap)", ErrInvalidSpec, name, n.Tap)
		}
	}
	caps := fcapi.CapabilitiesOf(ver)
	if len(spec.Net) > 0 {
		if err := caps.Check(fcapi.FeatureNetworkOverrides); err != nil {
			return Info{}, fmt.Errorf("clone template %q: %w", name, &vmm.NotSupportedError{Op: "a clone with taps of its own", Reason: err.Error()})
		}
	}
	if spec.VsockCID != 0 {
		if err := caps.Check(fcapi.FeatureVsockOverride); err != nil {
			return Info{}, fmt.Errorf("clone template %q: %w", name, &vmm.NotSupportedError{Op: "a clone of a template with a vsock device (it needs a socket of its own)", Reason: err.Error()})
		}
	}
	rec, err := r.newRecord(spec)
	if err != nil {
		return Info{}, err
	}
	rec.RestoreFrom, rec.AutoRemove = tpl.Dir, o.AutoRemove
	l, err := r.st.CreateLocked(ctx, rec.ID, rec)
	if err != nil {
		if errors.Is(err, ErrExists) {
			return Info{}, fmt.Errorf("sandbox %q: %w", rec.ID, ErrExists)
		}
		return Info{}, fmt.Errorf("clone template %q: %w", name, err)
	}
	err = r.ownDrives(l.Dir(), rec, tpl)
	if err == nil {
		err = l.Save(rec)
	}
	if err != nil {
		err = errors.Join(err, l.Remove())
		l.Unlock()
		return Info{}, fmt.Errorf("clone template %q: %w", name, err)
	}
	l.Unlock()
	// The clone is recorded: removing the template now has to reckon with it.
	unlock()
	unlock = nil
	in, err := r.Start(ctx, rec.ID)
	if err != nil {
		rmErr := r.Remove(context.WithoutCancel(ctx), rec.ID, true)
		return Info{}, errors.Join(fmt.Errorf("clone template %q: %w", name, err), rmErr)
	}
	return in, nil
}

// ownDrives gives the clone rec a copy of every drive the template holds a
// copy of, in the clone's directory, and points rec's spec at them.
func (r *Runtime) ownDrives(dir string, rec *record, tpl *Template) error {
	own := func(p *string) error {
		for _, d := range tpl.Drives {
			if d.Copied && d.Path == *p {
				dst := filepath.Join(dir, filepath.Base(d.Path))
				if err := copyFileSparse(d.Path, dst); err != nil {
					return fmt.Errorf("copy drive %q: %w", d.ID, err)
				}
				*p = dst
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

// ListTemplates returns the templates, sorted by name.
func (r *Runtime) ListTemplates(ctx context.Context) ([]Template, error) {
	ents, err := os.ReadDir(filepath.Join(r.st.Root(), templatesDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	clones, err := r.templateClones(ctx)
	if err != nil {
		return nil, err
	}
	var out []Template
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		tpl, _, err := r.readTemplate(e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // being made
		}
		if err != nil {
			return nil, err
		}
		tpl.Clones = clones[tpl.Dir]
		out = append(out, *tpl)
	}
	return out, nil
}

// InspectTemplate returns template name.
func (r *Runtime) InspectTemplate(ctx context.Context, name string) (Template, error) {
	tpl, _, err := r.readTemplate(name)
	if err != nil {
		return Template{}, err
	}
	clones, err := r.templateClones(ctx)
	if err != nil {
		return Template{}, err
	}
	tpl.Clones = clones[tpl.Dir]
	return *tpl, nil
}

// templateClones maps each template directory to the sandboxes restored
// from it.
func (r *Runtime) templateClones(_ context.Context) (map[string][]string, error) {
	ents, err := r.st.List()
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	out := map[string][]string{}
	for _, e := range ents {
		if e.Incomplete {
			continue
		}
		var rec record
		if err := r.st.Load(e.ID, &rec); err != nil {
			continue // removed meanwhile, or unreadable: not a clone we can name
		}
		if rec.RestoreFrom != "" {
			out[rec.RestoreFrom] = append(out[rec.RestoreFrom], rec.ID)
		}
	}
	for _, ids := range out {
		sort.Strings(ids)
	}
	return out, nil
}

// RemoveTemplate deletes template name. While clones (sandboxes started
// from it and not removed) exist it is refused, unless force is set: then
// running clones go on (their memory stays mapped and their drives are
// their own), but none of them can be started again.
func (r *Runtime) RemoveTemplate(ctx context.Context, name string, force bool) error {
	tdir, err := r.templateDir(name)
	if err != nil {
		return err
	}
	unlock, err := r.lockTemplates(name, syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(tdir, templateManifestName)); err != nil {
		if _, derr := os.Stat(tdir); derr != nil || !force {
			return fmt.Errorf("template %q: %w", name, ErrNotFound)
		}
	}
	clones, err := r.templateClones(ctx)
	if err != nil {
		return err
	}
	if ids := clones[tdir]; len(ids) > 0 && !force {
		return fmt.Errorf("remove template %q: sandboxes %s were started from it: %w", name, strings.Join(ids, ", "), ErrInvalidState)
	}
	// Rename first so that a half-removed template is never listed.
	gone := filepath.Join(filepath.Dir(tdir), fmt.Sprintf(".rm-%s-%d", name, time.Now().UnixNano()))
	if err := os.Rename(tdir, gone); err != nil {
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	// The last template takes the store with it; another one may be under
	// way (then the directory is not empty and stays).
	_ = os.Remove(filepath.Dir(tdir))
	return nil
}
