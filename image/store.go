package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/internal/store"
)

// Version is the version of the image record (image.json) this package
// writes; records with a higher one are refused.
const Version = 1

// Names inside a store directory.
const (
	imagesDir  = "sha256" // one directory per image, named by its ID's hex
	locksDir   = ".locks" // flock files: one per image, and refsLock
	tmpDir     = ".tmp"   // builds under way: <hex>-<random>
	refsLock   = "refs"   // serialises changes to the refs of all images
	recordFile = "image.json"
	configFile = "config.json"
)

// maxRecordSize bounds an image record read back (a few KiB in practice).
const maxRecordSize = 1 << 20

// Store is a directory of images. Its methods are safe for concurrent use
// by goroutines and processes: building an image holds a flock per image,
// and changing references a flock for the whole store.
type Store struct {
	dir string // absolute; immutable
	// now gives the time recorded as an import's time.
	now func() time.Time
}

// StateRootDir is the image store's directory in a state root, shared by
// the CLI and kindlingd. Its leading '.' keeps it out of the sandbox
// namespace (no sandbox ID starts with '.'), so sandbox listing and gc
// never take it for a sandbox.
const StateRootDir = ".images"

// Open opens the image store in dir, creating it (mode 0700) if needed.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errorf(ErrInvalid, "open image store: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open image store %q: %w", dir, err)
	}
	// The store's directories must be the caller's alone (no group or
	// other write), as the state root's are: another user who could swap
	// a root filesystem in them would choose what a guest boots.
	for _, d := range []string{abs, filepath.Join(abs, imagesDir), filepath.Join(abs, locksDir), filepath.Join(abs, tmpDir)} {
		if err := store.MkdirPrivate("image store directory", d); err != nil {
			return nil, fmt.Errorf("open image store %q: %w", dir, err)
		}
	}
	return &Store{dir: abs, now: time.Now}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Image is what the store knows of one image. It is also the form of the
// record (image.json) kept in the image's directory, inside a versioned
// envelope.
type Image struct {
	// ID is the digest of the image's configuration, "sha256:<hex>": it
	// names the image's content whatever its transport (registry,
	// docker save, OCI layout), as Docker's image IDs do.
	ID string `json:"id"`
	// Digest is the manifest digest, when the image came with a manifest
	// (registry, OCI layout); empty for a docker save tarball.
	Digest string `json:"digest,omitempty"`
	// Refs are the names the image is known by, fully qualified
	// ("index.docker.io/library/alpine:3.20"); a name belongs to one image.
	Refs []string `json:"refs,omitempty"`
	// Platform is "linux/amd64" (the only one accepted).
	Platform string `json:"platform"`
	// Created is the creation time the image's configuration states.
	Created time.Time `json:"created,omitzero"`
	// Imported is when it entered this store.
	Imported time.Time `json:"imported"`
	// Source is where it came from: a file, a directory or a reference.
	Source string `json:"source"`
	// Layers is the number of layers; Size the bytes of the files in the
	// flattened tree.
	Layers int   `json:"layers"`
	Size   int64 `json:"size"`
	// Config holds the process defaults of the image.
	Config Config `json:"config"`
	// RootFS lists the root filesystems built from the image, one per
	// agent (or none) injected.
	RootFS []RootFS `json:"rootfs"`
}

// Config is the part of an image's configuration a guest needs: the
// process to run and its defaults. It is written into the root filesystem
// as /.kindling/image.json for the agent, in this JSON form.
type Config struct {
	Env        []string `json:"env"`
	WorkingDir string   `json:"working_dir"`
	User       string   `json:"user"`
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
}

// Runnable reports whether the image says what to run: an entrypoint or a
// command. Images that do not can still be imported; running one needs a
// command from the caller.
func (c Config) Runnable() bool { return len(c.Entrypoint)+len(c.Cmd) > 0 }

// RootFS is one ext4 root filesystem built from an image.
type RootFS struct {
	// Agent is the SHA-256 (hex) of the agent binary injected, or empty
	// when the file was built without one.
	Agent string `json:"agent_sha256"`
	// File is the file's name in the image's directory; Path its full
	// path (filled in when read, not stored).
	File string `json:"file"`
	Path string `json:"path,omitempty"`
	// Size is the file's (apparent) size in bytes.
	Size int64 `json:"size"`
}

// RootFSFor returns the root filesystem built with the agent of SHA-256
// agentSHA ("" for none), if there is one.
func (im Image) RootFSFor(agentSHA string) (RootFS, bool) {
	for _, r := range im.RootFS {
		if r.Agent == agentSHA {
			return r, true
		}
	}
	return RootFS{}, false
}

// record is the on-disk form of an Image.
type record struct {
	Version int   `json:"version"`
	Image   Image `json:"image"`
}

// idHex checks that id is "sha256:<64 hex>" or 64 hex digits and returns
// the hex.
func idHex(id string) (string, bool) {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) != 64 {
		return "", false
	}
	if _, err := hex.DecodeString(h); err != nil || strings.ToLower(h) != h {
		return "", false
	}
	return h, true
}

func (s *Store) imageDir(hex string) string { return filepath.Join(s.dir, imagesDir, hex) }
func (s *Store) lockPath(name string) string {
	return filepath.Join(s.dir, locksDir, name)
}

// load reads the record of the image whose ID has hex h. A missing image
// gives an error matching ErrNotFound.
func (s *Store) load(h string) (Image, error) {
	dir := s.imageDir(h)
	path := filepath.Join(dir, recordFile)
	// The image's directory must be the caller's alone, as the store's
	// are (security.md, D2): another user who could write it would
	// choose the root filesystem a guest boots. The record is opened
	// without following a link, and read with a bound (D11).
	f, err := store.OpenInDir("image directory", dir, recordFile, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, errorf(ErrNotFound, "image sha256:%s not found", h)
	}
	if err != nil {
		return Image{}, fmt.Errorf("read image record: %w", err)
	}
	b, err := store.ReadLimited(f, path, maxRecordSize)
	f.Close()
	if err != nil {
		return Image{}, fmt.Errorf("read image record: %w", err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Image{}, errorf(ErrCorrupt, "image record %s is corrupt (%v): remove the image with 'kindling image rm -f sha256:%s' and import it again", path, err, h)
	}
	switch {
	case rec.Version < 1:
		return Image{}, errorf(ErrCorrupt, "image record %s has no valid version: remove the image and import it again", path)
	case rec.Version > Version:
		return Image{}, errorf(ErrNotSupported, "image record %s has version %d, this kindling understands up to %d: upgrade kindling", path, rec.Version, Version)
	}
	im := rec.Image
	if im.ID != "sha256:"+h {
		return Image{}, errorf(ErrCorrupt, "image record %s names image %s: remove the image and import it again", path, im.ID)
	}
	for i := range im.RootFS {
		im.RootFS[i].Path = filepath.Join(dir, im.RootFS[i].File)
	}
	return im, nil
}

// save writes im's record atomically into its directory.
func (s *Store) save(im Image) error {
	h, ok := idHex(im.ID)
	if !ok {
		return errorf(ErrInvalid, "save image: bad ID %q", im.ID)
	}
	b, err := encodeRecord(im)
	if err != nil {
		return err
	}
	if err := store.WriteFileAtomic(s.imageDir(h), recordFile, b); err != nil {
		return fmt.Errorf("write image record of %s: %w", im.ID, err)
	}
	return nil
}

// encodeRecord is the on-disk form of im: paths are not stored (the
// store's directory may move).
func encodeRecord(im Image) ([]byte, error) {
	im.RootFS = slices.Clone(im.RootFS)
	for i := range im.RootFS {
		im.RootFS[i].Path = ""
	}
	b, err := json.MarshalIndent(record{Version: Version, Image: im}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode image record: %w", err)
	}
	return append(b, '\n'), nil
}

// List returns the images in the store, the most recently imported first.
// It takes no lock: records are replaced atomically, and an image whose
// build has not finished has no record yet.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	des, err := os.ReadDir(filepath.Join(s.dir, imagesDir))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []Image
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, ok := idHex(de.Name())
		if !ok || !de.IsDir() {
			continue
		}
		im, err := s.load(h)
		if errors.Is(err, ErrNotFound) {
			continue // a build under way, or one that crashed (see Clean)
		}
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		out = append(out, im)
	}
	slices.SortFunc(out, func(a, b Image) int {
		if c := b.Imported.Compare(a.Imported); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Inspect returns the image that name designates (see Resolve).
func (s *Store) Inspect(ctx context.Context, name string) (Image, error) {
	im, _, err := s.resolve(ctx, name)
	return im, err
}

// Resolve returns the image that name designates: a reference it is known
// by ("alpine", "alpine:3.20", "registry:5000/app:v1"), its ID
// ("sha256:<hex>", or the hex), a unique prefix of the ID's hex, or its
// manifest digest. No match gives ErrNotFound, a prefix of several IDs
// ErrInvalid. A prefix has at least four hex digits.
func (s *Store) Resolve(ctx context.Context, name string) (Image, error) {
	return s.Inspect(ctx, name)
}

// resolve is Resolve, also reporting whether name matched one of the
// image's references (rather than its ID or digest).
func (s *Store) resolve(ctx context.Context, name string) (Image, bool, error) {
	if name == "" {
		return Image{}, false, errorf(ErrInvalid, "empty image name")
	}
	if h, ok := idHex(name); ok {
		im, err := s.load(h)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return im, false, err
		}
	}
	list, err := s.List(ctx)
	if err != nil {
		return Image{}, false, err
	}
	if ref, err := normalizeRef(name); err == nil {
		for _, im := range list {
			if slices.Contains(im.Refs, ref) {
				return im, true, nil
			}
		}
	}
	for _, im := range list {
		if im.Digest == name || (im.Digest != "" && strings.HasSuffix(name, "@"+im.Digest)) {
			return im, false, nil
		}
	}
	prefix := strings.TrimPrefix(name, "sha256:")
	if len(prefix) >= minPrefix && isHex(prefix) {
		var found []Image
		for _, im := range list {
			if strings.HasPrefix(strings.TrimPrefix(im.ID, "sha256:"), prefix) {
				found = append(found, im)
			}
		}
		switch len(found) {
		case 1:
			return found[0], false, nil
		case 0:
		default:
			return Image{}, false, errorf(ErrInvalid, "image ID prefix %q matches %d images: give more of the ID", name, len(found))
		}
	}
	return Image{}, false, errorf(ErrNotFound, "image %q not found", name)
}

// minPrefix is the fewest hex digits of an ID that Resolve takes as a
// prefix, so that a short word ("a", "db") never removes an image by
// chance.
const minPrefix = 4

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// RemoveOptions tune Remove.
type RemoveOptions struct {
	// Force removes an image even while InUse reports users.
	Force bool
	// InUse, if set, returns the names of what uses the image with this ID
	// (sandboxes, templates); the caller knows, this package does not.
	InUse func(id string) []string
}

// Removed says what Remove did.
type Removed struct {
	ID string `json:"id"`
	// Untagged is set when name was one of several references of the
	// image: only that reference was removed.
	Untagged string `json:"untagged,omitempty"`
	// Deleted is set when the image and its files were removed.
	Deleted bool `json:"deleted"`
	// Warning is set when a forced removal went ahead while the image was
	// in use.
	Warning string `json:"warning,omitempty"`
}

// Remove removes the image that name designates (see Resolve). When name
// is one of several references of the image, only that reference goes.
// Otherwise the image's directory (record, configuration, root
// filesystems) is deleted, unless o.InUse reports users: then the error
// matches ErrConflict, or, with o.Force, the image goes anyway and
// Removed.Warning says who used it. Copies already made from it (Clone)
// are separate files and are not touched.
func (s *Store) Remove(ctx context.Context, name string, o RemoveOptions) (Removed, error) {
	im, byRef, err := s.resolve(ctx, name)
	if err != nil {
		return Removed{}, fmt.Errorf("remove image: %w", err)
	}
	out := Removed{ID: im.ID}
	if byRef && len(im.Refs) > 1 {
		ref, _ := normalizeRef(name)
		if err := s.untag(ctx, im.ID, ref); err != nil {
			return Removed{}, err
		}
		out.Untagged = ref
		return out, nil
	}
	var users []string
	if o.InUse != nil {
		users = o.InUse(im.ID)
	}
	if len(users) > 0 {
		if !o.Force {
			return Removed{}, errorf(ErrConflict, "remove image %s: in use by %s: remove them first, or force it", displayName(im), strings.Join(users, ", "))
		}
		out.Warning = fmt.Sprintf("image %s removed while in use by %s: their own copies go on working, but nothing new can start from it", displayName(im), strings.Join(users, ", "))
	}
	h, _ := idHex(im.ID)
	l, err := store.LockFile(ctx, s.lockPath(h), store.Exclusive)
	if err != nil {
		return Removed{}, fmt.Errorf("remove image %s: %w", displayName(im), err)
	}
	defer l.Unlock()
	// Records are written under the references lock (see tag): take it
	// too, so that no record is being written into the directory removed.
	rl, err := store.LockFile(ctx, s.lockPath(refsLock), store.Exclusive)
	if err != nil {
		return Removed{}, fmt.Errorf("remove image %s: %w", displayName(im), err)
	}
	defer rl.Unlock()
	if err := os.RemoveAll(s.imageDir(h)); err != nil {
		return Removed{}, fmt.Errorf("remove image %s: %w", displayName(im), err)
	}
	l.Drop()
	if err := store.SyncDir(filepath.Join(s.dir, imagesDir)); err != nil {
		return Removed{}, fmt.Errorf("remove image %s: %w", displayName(im), err)
	}
	out.Deleted = true
	return out, nil
}

// untag removes ref from image id.
func (s *Store) untag(ctx context.Context, id, ref string) error {
	l, err := store.LockFile(ctx, s.lockPath(refsLock), store.Exclusive)
	if err != nil {
		return fmt.Errorf("untag %s: %w", ref, err)
	}
	defer l.Unlock()
	h, _ := idHex(id)
	im, err := s.load(h)
	if err != nil {
		return fmt.Errorf("untag %s: %w", ref, err)
	}
	im.Refs = slices.DeleteFunc(im.Refs, func(r string) bool { return r == ref })
	return s.save(im)
}

// tag makes refs name image im (taking them from any other image) and
// saves im's record. Every record is written under the references lock,
// taken after an image's lock when both are held (never before).
func (s *Store) tag(ctx context.Context, im Image, refs []string) (Image, error) {
	l, err := store.LockFile(ctx, s.lockPath(refsLock), store.Exclusive)
	if err != nil {
		return Image{}, fmt.Errorf("tag image %s: %w", im.ID, err)
	}
	defer l.Unlock()
	if len(refs) > 0 {
		others, err := s.List(ctx)
		if err != nil {
			return Image{}, err
		}
		for _, o := range others {
			if o.ID == im.ID {
				continue
			}
			n := len(o.Refs)
			o.Refs = slices.DeleteFunc(o.Refs, func(r string) bool { return slices.Contains(refs, r) })
			if len(o.Refs) != n {
				if err := s.save(o); err != nil {
					return Image{}, err
				}
			}
		}
	}
	h, _ := idHex(im.ID)
	// The references on disk are the truth (another import may have taken
	// one of im's meanwhile, or added one); the caller holds im's lock, so
	// the rest of im is current.
	im.Refs = nil
	if cur, err := s.load(h); err == nil {
		im.Refs = cur.Refs
	}
	im.Refs = append(slices.Clone(im.Refs), refs...)
	slices.Sort(im.Refs)
	im.Refs = slices.Compact(im.Refs)
	if err := s.save(im); err != nil {
		return Image{}, err
	}
	dir := s.imageDir(h)
	for i := range im.RootFS {
		im.RootFS[i].Path = filepath.Join(dir, im.RootFS[i].File)
	}
	return im, nil
}

// displayName names an image for a person: its first reference, else its
// short ID.
func displayName(im Image) string {
	if len(im.Refs) > 0 {
		return FamiliarRef(im.Refs[0])
	}
	return ShortID(im.ID)
}

// ShortID returns the first 12 hex digits of an image ID.
func ShortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// archivePrefix starts the name of a directory an OCI archive is unpacked
// into, in tmpDir; its lock, in locksDir, has the same name.
const archivePrefix = "archive-"

// archiveDir makes a new directory to unpack an OCI archive into, holding
// its lock (taken first, so that Clean never sees the directory unlocked
// while it is in use). The caller removes the directory, then drops the
// lock.
func (s *Store) archiveDir(ctx context.Context) (string, *store.FileLock, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	name := archivePrefix + hex.EncodeToString(b[:])
	l, err := store.LockFile(ctx, s.lockPath(name), store.Exclusive)
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(s.dir, tmpDir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		l.Drop()
		return "", nil, err
	}
	return dir, l, nil
}

// Clean removes what crashed imports left: builds under way in no process
// (their image is not locked), image directories without a record, and
// unpacked OCI archives no import holds. It returns the paths removed.
func (s *Store) Clean() ([]string, error) {
	var removed []string
	var errs []error
	tmps, err := os.ReadDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		return nil, fmt.Errorf("clean image store: %w", err)
	}
	for _, de := range tmps {
		if strings.HasPrefix(de.Name(), archivePrefix) {
			r, err := s.cleanArchive(de.Name())
			removed = append(removed, r...)
			errs = append(errs, err)
			continue
		}
		h, _, _ := strings.Cut(de.Name(), "-")
		if _, ok := idHex(h); !ok {
			continue
		}
		r, err := s.cleanImage(h)
		removed = append(removed, r...)
		errs = append(errs, err)
	}
	imgs, err := os.ReadDir(filepath.Join(s.dir, imagesDir))
	if err != nil {
		return removed, fmt.Errorf("clean image store: %w", err)
	}
	for _, de := range imgs {
		if _, ok := idHex(de.Name()); !ok {
			continue
		}
		if _, err := os.Lstat(filepath.Join(s.imageDir(de.Name()), recordFile)); errors.Is(err, os.ErrNotExist) {
			r, err := s.cleanImage(de.Name())
			removed = append(removed, r...)
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// cleanArchive removes the unpacked archive name of tmpDir unless an
// import holds its lock.
func (s *Store) cleanArchive(name string) ([]string, error) {
	l, err := store.TryLockFile(s.lockPath(name), store.Exclusive)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer l.Drop()
	dir := filepath.Join(s.dir, tmpDir, name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	return []string{dir}, nil
}

// cleanImage removes the stale builds of image h and its directory if it
// has no record, unless a build of it holds its lock.
func (s *Store) cleanImage(h string) ([]string, error) {
	l, err := store.TryLockFile(s.lockPath(h), store.Exclusive)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	removed, err := s.cleanLocked(h)
	if _, serr := os.Lstat(s.imageDir(h)); errors.Is(serr, os.ErrNotExist) {
		l.Drop()
	}
	return removed, err
}

// cleanLocked removes, with image h's lock held, its stale build
// directories and its image directory if that has no record.
func (s *Store) cleanLocked(h string) ([]string, error) {
	var removed []string
	var errs []error
	matches, _ := filepath.Glob(filepath.Join(s.dir, tmpDir, h+"-*"))
	for _, m := range matches {
		if err := os.RemoveAll(m); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, m)
	}
	dir := s.imageDir(h)
	if _, err := os.Lstat(filepath.Join(dir, recordFile)); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Lstat(dir); err == nil {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, dir)
			}
		}
	}
	return removed, errors.Join(errs...)
}
