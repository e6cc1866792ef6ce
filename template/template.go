package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

// Sentinel errors: kindling's own (see package sandbox), re-exported as the
// same values, and this package's ErrCorrupt.
var (
	// ErrNotFound: no template has that name.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: a template with that name exists already.
	ErrExists = errdefs.ErrExists
	// ErrNotSupported: the Firecracker release cannot clone this template.
	ErrNotSupported = errdefs.ErrNotSupported
	// ErrInvalid: a bad name or clone option; matched by
	// sandbox.ErrInvalidSpec too.
	ErrInvalid = errdefs.ErrInvalid
	// ErrConflict: the template is in use, or its source is not running.
	ErrConflict = errdefs.ErrConflict
	// ErrCorrupt: a template's files are missing or do not match the
	// checksums of its manifest. It matches errdefs.ErrCorrupt.
	ErrCorrupt = errdefs.New(errdefs.ErrCorrupt, "template corrupt")
)

// Store layout: <root>/.templates/<name>/ holds the snapshot files, the
// template's own copies of the source's writable drives, placeholder files
// and kernel, a sandbox snapshot manifest (so that a clone is a sandbox
// restored from the template directory) and the template manifest,
// written last: a directory without it is a template being created, or one
// whose creation crashed. The store's lock is the file .lock in it, held
// with internal/store's lock; the last Remove takes both away.
const (
	templatesDir         = ".templates"
	templatesLock        = ".lock"
	templateManifestName = "kindling-template.json"
	// Format is the version of the template manifest this package writes;
	// it reads this one and the ones before (version 2 added image,
	// image_ref and setup).
	Format = 2
)

// snapshotManifestName is the sandbox package's manifest in a snapshot
// directory; it is not one of the files a template checksums.
const snapshotManifestName = "kindling-snapshot.json"

// Options are the options of Store.Create.
type Options struct {
	// Stop ends the source sandbox once the template is taken, instead of
	// resuming it. Its paused VMM is killed: its drives then hold what the
	// template's copies hold, and its guest state lives on in the template.
	Stop bool
	// Image records the ID of the image the sandbox's root filesystem was
	// copied from (Template.Image), so that the template counts among the
	// image's users; empty for none.
	Image string
}

// CloneOptions name the sandbox Store.Run starts.
type CloneOptions struct {
	// ID of the new sandbox; empty for a random one.
	ID string
	// Net replaces the template's network interfaces, one for one; nil
	// gives the clone interfaces like the template's (new taps where the
	// template's source had kindling create them).
	Net []sandbox.Net
	// AutoRemove removes the clone once its VMM exits.
	AutoRemove bool
	// Verify re-hashes every file of the template before the clone starts
	// (the memory file costs about 1 ms per MiB). Without it a clone checks
	// that each file has the size and modification time recorded when the
	// template was made, and hashes only the small microVM state file.
	Verify bool
	// Firecracker is the executable the clone runs; empty for the one
	// configured by default (sandbox.FindFirecracker). It must be of the
	// release the template was made with; the template never chooses it.
	Firecracker string
	// Labels are the clone's labels (see sandbox.Spec.Labels).
	Labels map[string]string
}

// Template describes a template: a snapshot of a sandbox that new
// sandboxes (clones) start from without booting. It is the template
// manifest's content (format Format).
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
	Drives []Drive `json:"drives,omitempty"`
	// Net are the network interfaces; a clone gets its own taps.
	Net []Net `json:"net,omitempty"`
	// VsockCID is the vsock device's context ID, 0 without one.
	VsockCID uint32 `json:"vsock_cid,omitempty"`
	// VsockPerClone is set when each clone binds a vsock socket of its
	// own on any Firecracker release (the snapshot names it relative to
	// the sandbox's directory, or in its jail). A template with a vsock
	// device made before kindling did so clones only on releases that
	// override the socket on load (≥ 1.16).
	VsockPerClone bool `json:"vsock_per_clone,omitempty"`
	// Files are the files the template owns, with their checksums.
	Files []File `json:"files"`
	// Image is the ID of the image the template was built from (Build),
	// ImageRef the name it was given by; empty for a template taken from
	// a sandbox. The template owns its copy of the image's root
	// filesystem: the image is only recorded, so that it counts the
	// template among its users.
	Image    string `json:"image,omitempty"`
	ImageRef string `json:"image_ref,omitempty"`
	// Setup are the commands run in the guest before it was snapshotted
	// (Build).
	Setup []string `json:"setup,omitempty"`
	// Clones are the sandboxes started from the template and not removed
	// (computed when read, not stored).
	Clones []string `json:"clones,omitempty"`
}

// Drive is a drive of a template.
type Drive struct {
	ID       string `json:"id"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Root     bool   `json:"root,omitempty"`
	// Copied is set when Path is the template's own frozen copy.
	Copied bool `json:"copied,omitempty"`
}

// Net is a network interface of a template.
type Net struct {
	IfaceID string `json:"iface_id"`
	Tap     string `json:"tap"`
	MAC     string `json:"mac"`
	// Auto is set when clones get taps of their own created for them.
	Auto bool `json:"auto,omitempty"`
}

// File is a file a template owns.
type File struct {
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

// Store is the template store of one sandbox runtime's state root. Its
// methods are safe for concurrent use, also from several processes.
type Store struct {
	rt       *sandbox.Runtime
	st       *store.Store
	log      *slog.Logger
	tp       trace.TracerProvider
	progress ProgressFunc // nil: not reported
}

// ProgressFunc is told how far hashing a template's files has got: done of
// total bytes. It is called often (every few MiB) and from several
// goroutines, one at a time; done reaches total at the end of a hashing
// that succeeds.
type ProgressFunc func(done, total int64)

// WithProgress has the store report the progress of hashing a template's
// files (Create, Verify, and Run with Verify) to fn, so that a program can
// show it: the memory file of a large VM takes seconds.
func WithProgress(fn ProgressFunc) Option {
	return func(s *Store) { s.progress = fn }
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// WithTracerProvider sets the OpenTelemetry tracer provider (default: no-op).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *Store) {
		if tp != nil {
			s.tp = tp
		}
	}
}

// Open returns the template store of rt's state root. The templates live
// under it, and their clones are rt's sandboxes.
func Open(rt *sandbox.Runtime, opts ...Option) (*Store, error) {
	st, err := store.Open(rt.Root())
	if err != nil {
		return nil, fmt.Errorf("open template store: %w", err)
	}
	s := &Store{rt: rt, st: st, log: slog.New(slog.DiscardHandler), tp: noop.NewTracerProvider()}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// tracerName names the store's tracer.
const tracerName = "github.com/kindling-vm/kindling/template"

// span starts the span of one whole operation on template name; the
// returned func ends it, recording *errp when it is not nil.
func (s *Store) span(ctx context.Context, op, name string) (context.Context, func(errp *error)) {
	ctx, sp := s.tp.Tracer(tracerName).Start(ctx, op, trace.WithAttributes(attribute.String("template.name", name)))
	return ctx, func(errp *error) {
		if errp != nil && *errp != nil {
			sp.RecordError(*errp)
			sp.SetStatus(codes.Error, (*errp).Error())
		}
		sp.End()
	}
}

func (s *Store) dir(name string) (string, error) {
	if err := store.ValidateID(name); err != nil {
		return "", fmt.Errorf("%w: template name: %w", sandbox.ErrInvalidSpec, err)
	}
	return filepath.Join(s.rt.Root(), templatesDir, name), nil
}

// lock takes the template store's lock: shared to start clones, exclusive
// to remove a template, so that no clone is recorded while its template
// goes away. Without a template store (no template was made, or the last
// was removed) the error matches ErrNotFound, for template name.
func (s *Store) lock(ctx context.Context, name string, mode store.LockMode) (*store.FileLock, error) {
	if err := store.CheckPrivateDir("template store", filepath.Join(s.rt.Root(), templatesDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	l, err := store.LockFile(ctx, filepath.Join(s.rt.Root(), templatesDir, templatesLock), mode)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("template %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("lock the template store: %w", err)
	}
	return l, nil
}

// Create makes template name from the running (or paused) sandbox from:
// the sandbox is paused, a snapshot that owns copies of its writable
// drives, placeholders and kernel is written into the template, and the
// sandbox resumes (or, with o.Stop, is stopped). A failure leaves no
// template behind.
func (s *Store) Create(ctx context.Context, name, from string, o Options) (_ Template, err error) {
	ctx, end := s.span(ctx, "template.Create", name)
	defer end(&err)
	var describe func(*Template)
	if o.Image != "" {
		describe = func(t *Template) { t.Image = o.Image }
	}
	return s.create(ctx, name, from, o, describe)
}

// create is Create; describe, when not nil, adds to the manifest before
// it is written.
func (s *Store) create(ctx context.Context, name, from string, o Options, describe func(*Template)) (_ Template, err error) {
	tdir, err := s.dir(name)
	if err != nil {
		return Template{}, err
	}
	// A Remove may remove the emptied store in between: retry.
	for range 3 {
		if err = store.MkdirPrivate("template store", filepath.Dir(tdir)); err == nil {
			if err = os.Mkdir(tdir, 0o700); !errors.Is(err, os.ErrNotExist) {
				break
			}
		}
	}
	if errors.Is(err, store.ErrNotPrivate) {
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
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

	snap, err := s.rt.Snapshot(ctx, from, tdir, sandbox.SnapshotOptions{Own: true, LeavePaused: o.Stop})
	if err != nil {
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
	}
	spec := snap.Spec
	tpl := Template{
		Format: Format, Name: name, Dir: tdir, CreatedAt: snap.CreatedAt, From: snap.From,
		Firecracker: snap.Firecracker, FirecrackerPath: spec.Firecracker,
		VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, SMT: spec.SMT, VsockCID: spec.VsockCID,
		VsockPerClone: spec.VsockCID != 0 && snap.VsockPerRestore,
	}
	for _, d := range snap.Drives {
		tpl.Drives = append(tpl.Drives, Drive{ID: d.ID, Path: d.Path, ReadOnly: d.ReadOnly, Root: d.Root, Copied: d.Owned})
	}
	for i, t := range snap.Taps {
		tpl.Net = append(tpl.Net, Net{IfaceID: fmt.Sprintf("eth%d", i), Tap: t.Name, MAC: t.MAC, Auto: t.Created})
	}
	if fi, err := os.Stat(tpl.FirecrackerPath); err == nil {
		tpl.FirecrackerStamp = stampOf(fi)
	}
	tpl.SnapshotFormat = askFirecracker(ctx, tpl.FirecrackerPath, "--snapshot-version")
	if describe != nil {
		describe(&tpl)
	}
	if err := finish(tdir, &tpl, s.progress); err != nil {
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
	}
	s.log.Debug("made template", "template", name, "from", from)
	if o.Stop {
		if err := s.rt.Kill(ctx, from); err != nil {
			return tpl, fmt.Errorf("template %q made; stop sandbox %q: %w", name, from, err)
		}
	}
	return tpl, nil
}

// finish hashes the template's files and writes its manifest.
func finish(tdir string, tpl *Template, report ProgressFunc) error {
	ents, err := os.ReadDir(tdir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() != snapshotManifestName && e.Name() != templateManifestName {
			names = append(names, e.Name())
		}
	}
	files := make([]File, len(names))
	errs := make([]error, len(names))
	p := newProgress(report)
	for _, n := range names {
		p.expect(filepath.Join(tdir, n))
	}
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { files[i], errs[i] = hashFile(filepath.Join(tdir, n), p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	tpl.Files = files
	b, err := encodeManifest(tpl)
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(tdir, templateManifestName, b)
}

// encodeManifest is the content of a template manifest file.
func encodeManifest(tpl *Template) ([]byte, error) {
	b, err := json.MarshalIndent(tpl, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode template manifest: %w", err)
	}
	return b, nil
}

func hashFile(path string, p *progress) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return File{}, err
	}
	h := sha256.New()
	var w io.Writer = h
	if p != nil {
		w = io.MultiWriter(h, p)
	}
	if _, err := io.Copy(w, f); err != nil {
		return File{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return File{Name: filepath.Base(path), SHA256: hex.EncodeToString(h.Sum(nil)), Stamp: stampOf(fi)}, nil
}

// askFirecracker runs the firecracker executable with flag and returns the
// first version it prints ("v8.0.0", "Firecracker v1.7.0"), "" if none.
// (Releases are asked with vmm.ExecutableRelease; this asks for what else
// an executable reports in the same form, such as its snapshot format.)
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

// checkFormat refuses a manifest format this package cannot read: one
// from a newer kindling, or none.
func checkFormat(f int) error {
	if f < 1 || f > Format {
		return fmt.Errorf("manifest format %d, this kindling reads 1 to %d: %w", f, Format, ErrNotSupported)
	}
	return nil
}

// read reads template name's manifest and checks that its snapshot's is
// readable.
func (s *Store) read(name string) (*Template, error) {
	tdir, err := s.dir(name)
	if err != nil {
		return nil, err
	}
	// The store and the template's directory must be the caller's alone,
	// and the manifest is not read through a symlink.
	if err := store.CheckPrivateDir("template store", filepath.Dir(tdir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	f, err := store.OpenInDir("template directory", tdir, templateManifestName, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("template %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	b, err := store.ReadLimited(f, f.Name(), store.MaxManifestSize)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("template %q: manifest: %w: %w", name, err, ErrCorrupt)
	}
	var tpl Template
	if err := json.Unmarshal(b, &tpl); err != nil {
		return nil, fmt.Errorf("template %q: manifest: %w: %w", name, err, ErrCorrupt)
	}
	if err := checkFormat(tpl.Format); err != nil {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	tpl.Dir = tdir
	for _, f := range tpl.Files {
		// A template's files are in its directory: a name reaching out of
		// it would have kindling read (hash) another file.
		if !filepath.IsLocal(f.Name) || strings.ContainsRune(f.Name, '/') {
			return nil, fmt.Errorf("template %q: manifest names the file %q, outside the template's directory: %w", name, f.Name, ErrCorrupt)
		}
	}
	if _, err := sandbox.ReadSnapshot(tdir); err != nil {
		return nil, fmt.Errorf("template %q: %w: %w", name, err, ErrCorrupt)
	}
	return &tpl, nil
}

// checkFiles checks the template's files: all of them hashed when full,
// else the size and modification time of each, and the hash of the small
// microVM state file. Read-only drives shared with the source must exist.
func (t *Template) checkFiles(full bool, report ProgressFunc) error {
	p := newProgress(report)
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex // guards errs
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	// Every file to hash counts in the progress's total before any is
	// hashed, so that a report never shows one file's bytes as all of it.
	var hash []File
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
		p.expect(path)
		hash = append(hash, f)
	}
	for _, f := range hash {
		path := filepath.Join(t.Dir, f.Name)
		wg.Go(func() {
			got, err := hashFile(path, p)
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
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

// Verify re-hashes every file of template name and compares it to the
// manifest; a mismatch gives an error matching ErrCorrupt.
func (s *Store) Verify(ctx context.Context, name string) (err error) {
	_, end := s.span(ctx, "template.Verify", name)
	defer end(&err)

	tpl, err := s.read(name)
	if err != nil {
		return err
	}
	if err := tpl.checkFiles(true, s.progress); err != nil {
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
		return fcapi.Version{}, fmt.Errorf("%w: firecracker release %q: %w", ErrCorrupt, t.Firecracker, err)
	}
	fi, err := os.Stat(fc)
	if err != nil {
		return fcapi.Version{}, fmt.Errorf("%w: firecracker %s: %w", sandbox.ErrInvalidSpec, fc, err)
	}
	if fc == t.FirecrackerPath && stampOf(fi) == t.FirecrackerStamp {
		return tv, nil
	}
	v, err := vmm.ExecutableRelease(ctx, fc)
	if err != nil {
		return fcapi.Version{}, fmt.Errorf("%w: %s --version tells no release: %w", sandbox.ErrInvalidSpec, fc, err)
	}
	same := v == tv
	if t.SnapshotFormat != "" {
		if f := askFirecracker(ctx, fc, "--snapshot-version"); f != "" {
			same = f == t.SnapshotFormat
		}
	}
	if !same {
		return fcapi.Version{}, fmt.Errorf("%w: template %q was made by Firecracker %s and cannot be loaded by %s (%s): use that release, or make the template again", sandbox.ErrInvalidSpec, t.Name, tv, v, fc)
	}
	return v, nil
}

// Run starts a new sandbox, a clone, from template name: its VMM loads
// the template's snapshot — the guest memory file mapped privately, so
// clones share its pages copy-on-write — with its own copy of every
// writable drive, its own taps and vsock socket, and resumes. A clone that
// cannot start leaves nothing behind.
func (s *Store) Run(ctx context.Context, name string, o CloneOptions) (_ sandbox.Info, err error) {
	ctx, end := s.span(ctx, "template.Run", name)
	defer end(&err)

	if _, err := s.dir(name); err != nil {
		return sandbox.Info{}, err
	}
	l, err := s.lock(ctx, name, store.Shared)
	if err != nil {
		return sandbox.Info{}, err
	}
	defer l.Unlock()
	tpl, err := s.read(name)
	if err != nil {
		return sandbox.Info{}, err
	}
	if err := tpl.checkFiles(o.Verify, s.progress); err != nil {
		return sandbox.Info{}, fmt.Errorf("template %q: %w", name, err)
	}
	// The executable is the caller's (given, else the one configured by
	// default), never the manifest's: a template only names the release
	// it needs, and the path it was made with is only compared.
	fc, err := sandbox.FindFirecracker(o.Firecracker)
	if err != nil {
		return sandbox.Info{}, err
	}
	ver, err := tpl.checkRelease(ctx, fc)
	if err != nil {
		return sandbox.Info{}, err
	}
	nets := len(tpl.Net)
	if o.Net != nil {
		if len(o.Net) != len(tpl.Net) {
			return sandbox.Info{}, fmt.Errorf("%w: template %q has %d network interfaces: give as many, or none", sandbox.ErrInvalidSpec, name, len(tpl.Net))
		}
		for i, n := range o.Net {
			if !n.Auto && n.Tap == tpl.Net[i].Tap {
				return sandbox.Info{}, fmt.Errorf("%w: template %q uses tap %q, which a clone cannot share: give the clone its own interfaces (auto, or another tap)", sandbox.ErrInvalidSpec, name, n.Tap)
			}
		}
	} else {
		for _, n := range tpl.Net {
			if !n.Auto {
				return sandbox.Info{}, fmt.Errorf("%w: template %q uses tap %q, which a clone cannot share: give the clone its own interfaces (auto, or another tap)", sandbox.ErrInvalidSpec, name, n.Tap)
			}
		}
	}
	caps := fcapi.CapabilitiesOf(ver)
	if nets > 0 {
		if err := caps.Check(fcapi.FeatureNetworkOverrides); err != nil {
			return sandbox.Info{}, fmt.Errorf("clone template %q: %w", name, &vmm.NotSupportedError{Op: "a clone with taps of its own", Reason: err.Error()})
		}
	}
	if tpl.VsockCID != 0 && !tpl.VsockPerClone {
		if err := caps.Check(fcapi.FeatureVsockOverride); err != nil {
			return sandbox.Info{}, fmt.Errorf("clone template %q: %w", name, &vmm.NotSupportedError{Op: "a clone of a template with a vsock device made before kindling named its socket relative to the sandbox's directory (make the template again)", Reason: err.Error()})
		}
	}
	in, err := s.rt.CreateFromSnapshot(ctx, tpl.Dir, sandbox.RestoreOptions{
		ID: o.ID, Net: o.Net, AutoRemove: o.AutoRemove, Firecracker: fc, FirecrackerRelease: ver.String(), CopyOwnedDrives: true, Labels: o.Labels,
	})
	if err != nil {
		if errors.Is(err, ErrExists) {
			return sandbox.Info{}, err
		}
		return sandbox.Info{}, fmt.Errorf("clone template %q: %w", name, err)
	}
	// The clone is recorded: removing the template now has to reckon with it.
	l.Unlock()
	id := in.ID
	if in, err = s.rt.Start(ctx, id); err != nil {
		rmErr := s.rt.Remove(context.WithoutCancel(ctx), id, true)
		return sandbox.Info{}, errors.Join(fmt.Errorf("clone template %q: %w", name, err), rmErr)
	}
	return in, nil
}

// List returns the templates, sorted by name.
func (s *Store) List(ctx context.Context) ([]Template, error) {
	ents, err := os.ReadDir(filepath.Join(s.rt.Root(), templatesDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	clones, err := s.clones(ctx)
	if err != nil {
		return nil, err
	}
	var out []Template
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		tpl, err := s.read(e.Name())
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

// Inspect returns template name.
func (s *Store) Inspect(ctx context.Context, name string) (Template, error) {
	tpl, err := s.read(name)
	if err != nil {
		return Template{}, err
	}
	clones, err := s.clones(ctx)
	if err != nil {
		return Template{}, err
	}
	tpl.Clones = clones[tpl.Dir]
	return *tpl, nil
}

// clones maps each template directory to the sandboxes restored from it.
func (s *Store) clones(ctx context.Context) (map[string][]string, error) {
	infos, err := s.rt.List(ctx, sandbox.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, in := range infos {
		if in.RestoredFrom != "" {
			out[in.RestoredFrom] = append(out[in.RestoredFrom], in.ID)
		}
	}
	for _, ids := range out {
		sort.Strings(ids)
	}
	return out, nil
}

// Remove deletes template name. While clones (sandboxes started from it
// and not removed) exist it is refused with an error matching ErrConflict,
// unless force is set: then running clones go on (their memory stays
// mapped and their drives are their own), but none of them can be started
// again.
func (s *Store) Remove(ctx context.Context, name string, force bool) (err error) {
	ctx, end := s.span(ctx, "template.Remove", name)
	defer end(&err)

	tdir, err := s.dir(name)
	if err != nil {
		return err
	}
	l, err := s.lock(ctx, name, store.Exclusive)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if _, err := os.Stat(filepath.Join(tdir, templateManifestName)); err != nil {
		if _, derr := os.Stat(tdir); derr != nil || !force {
			return fmt.Errorf("template %q: %w", name, ErrNotFound)
		}
	}
	clones, err := s.clones(ctx)
	if err != nil {
		return err
	}
	if ids := clones[tdir]; len(ids) > 0 && !force {
		return fmt.Errorf("remove template %q: sandboxes %s were started from it: %w", name, strings.Join(ids, ", "), sandbox.ErrInvalidState)
	}
	// Rename first so that a half-removed template is never listed.
	gone := filepath.Join(filepath.Dir(tdir), fmt.Sprintf(".rm-%s-%d", name, time.Now().UnixNano()))
	if err := os.Rename(tdir, gone); err != nil {
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	// The last template takes the store and its lock with it; another one
	// may be under way (then the directory holds it and stays). A command
	// waiting for the dropped lock finds the store gone.
	if ents, err := os.ReadDir(filepath.Dir(tdir)); err == nil && len(ents) == 1 && ents[0].Name() == templatesLock {
		l.Drop()
		_ = os.Remove(filepath.Dir(tdir))
	}
	return nil
}
