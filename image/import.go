package image

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindling-vm/kindling/internal/store"
)

// ImportOptions tune Import.
type ImportOptions struct {
	BuildOptions
	// Ref picks the image, by name, from an archive or layout that holds
	// several; with one image it may be left empty.
	Ref string
	// Tags are more names to give the image, besides those its archive
	// or layout records.
	Tags []string
	// Progress, if set, is called with each step (see Event), from the
	// importing goroutine.
	Progress func(Event)
}

// PullOptions tune Pull.
type PullOptions struct {
	BuildOptions
	// Keychain gives registry credentials; nil uses the docker config
	// ($DOCKER_CONFIG/config.json, else ~/.docker/config.json, with its
	// credential helpers), anonymous where it has none.
	Keychain authn.Keychain
	// Transport, if set, carries the registry requests.
	Transport http.RoundTripper
	// Progress, as in ImportOptions.
	Progress func(Event)
}

// source is one image picked from where it comes from.
type source struct {
	img    v1.Image
	name   string   // for messages: the path or reference given
	origin string   // for the record: the absolute path, or the reference
	digest string   // the manifest digest, when known
	refs   []string // fully qualified names that come with it
}

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// Import adds the image in path to the store and builds its root
// filesystem: path is a `docker save` tarball, an OCI image layout
// directory or an OCI archive (a tar of a layout). An image the store has
// already (with a root filesystem for this agent) is not built again; of
// concurrent imports of one image, in any processes, one builds and the
// others wait and use its result. On error nothing is left in the store.
func (s *Store) Import(ctx context.Context, path string, o ImportOptions) (Image, error) {
	src, cleanup, err := s.open(ctx, path, o.Ref)
	if err != nil {
		return Image{}, err
	}
	defer cleanup()
	if abs, err := filepath.Abs(path); err == nil {
		src.origin = abs
	}
	tags, err := normalizeRefs(o.Tags)
	if err != nil {
		return Image{}, err
	}
	src.refs = append(src.refs, tags...)
	return s.add(ctx, src, o.BuildOptions, o.Progress)
}

// Pull fetches the image ref ("alpine:3.20", "registry:5000/app@sha256:…")
// from its registry, for linux/amd64, and adds it as Import does. Layers
// are verified against their digests as they stream in; nothing is
// fetched when the store has the image already.
func (s *Store) Pull(ctx context.Context, ref string, o PullOptions) (Image, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, errorf(ErrInvalid, "pull %q: %v: give a reference such as alpine:3.20", ref, err)
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(amd64),
		remote.WithUserAgent("kindling"),
	}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return Image{}, pullErr(ref, err)
	}
	src := &source{name: ref}
	if t, ok := r.(name.Tag); ok {
		src.refs = []string{t.Name()}
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Image{}, pullErr(ref, err)
		}
		d, err := pickPlatform(ref, idx)
		if err != nil {
			return Image{}, err
		}
		if src.img, err = idx.Image(d.Digest); err != nil {
			return Image{}, pullErr(ref, err)
		}
		src.digest = d.Digest.String()
	} else {
		if src.img, err = desc.Image(); err != nil {
			return Image{}, pullErr(ref, err)
		}
		src.digest = desc.Digest.String()
	}
	return s.add(ctx, src, o.BuildOptions, o.Progress)
}

// pullErr names a registry failure and its fix.
func pullErr(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return errorf(ErrInvalid, "pull %s: the registry refused the credentials (%d): log in with 'docker login' (kindling reads the docker config, $DOCKER_CONFIG)", ref, te.StatusCode)
		case http.StatusNotFound:
			return errorf(ErrNotFound, "pull %s: not found in the registry: check the name and tag", ref)
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pull %s: %w: check the registry's address and the network", ref, err)
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

// open picks the image in path (see Import). cleanup removes what opening
// needed (an OCI archive is unpacked into the store's temporary
// directory).
func (s *Store) open(ctx context.Context, path, ref string) (*source, func(), error) {
	nothing := func() {}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nothing, errorf(ErrNotFound, "import %s: no such file or directory", path)
	}
	if err != nil {
		return nil, nothing, fmt.Errorf("import %s: %w", path, err)
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(path, "oci-layout")); err != nil {
			return nil, nothing, errorf(ErrInvalid, "import %s: a directory without an oci-layout file is not an OCI image layout: give a layout, or a docker save or OCI archive file", path)
		}
		src, err := fromLayout(path, path, ref)
		return src, nothing, err
	}
	names, err := tarNames(path)
	if err != nil {
		return nil, nothing, err
	}
	switch {
	case names["manifest.json"]:
		src, err := fromDockerTarball(path, ref)
		return src, nothing, err
	case names["oci-layout"] && names["index.json"]:
		dir, l, err := s.archiveDir(ctx)
		if err != nil {
			return nil, nothing, fmt.Errorf("import %s: %w", path, err)
		}
		cleanup := func() { os.RemoveAll(dir); l.Drop() }
		if err := unpackArchive(ctx, path, dir); err != nil {
			cleanup()
			if diskFull(err) {
				return nil, nothing, fmt.Errorf("import %s: %w: free some space under %s", path, err, s.dir)
			}
			return nil, nothing, err
		}
		src, err := fromLayout(path, dir, ref)
		if err != nil {
			cleanup()
			return nil, nothing, err
		}
		return src, cleanup, nil
	}
	return nil, nothing, errorf(ErrInvalid, "import %s: a tar archive with neither manifest.json (docker save) nor oci-layout (OCI archive): give an image archive", path)
}

// tarNames returns the names of the top-level files of the tar archive at
// path. A file that is not a tar archive is refused.
func tarNames(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	defer f.Close()
	magic := make([]byte, 6)
	n, _ := f.ReadAt(magic, 0)
	magic = magic[:n]
	if bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) || bytes.HasPrefix(magic, []byte("\xfd7zXZ\x00")) || bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return nil, errorf(ErrInvalid, "import %s: a compressed file: decompress it first (gunzip, xz -d, zstd -d)", path)
	}
	names := map[string]bool{}
	tr := tar.NewReader(f) // a Seeker: file data is skipped, not read
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if len(names) == 0 {
				return nil, errorf(ErrInvalid, "import %s: an empty tar archive: give an image archive", path)
			}
			return names, nil
		}
		if err != nil {
			if len(names) == 0 {
				return nil, errorf(ErrInvalid, "import %s: not a tar archive (%v): give a docker save tarball, an OCI archive or an OCI layout directory", path, err)
			}
			return nil, errorf(ErrCorrupt, "import %s: a damaged tar archive (%v): get a good copy", path, err)
		}
		names[strings.TrimPrefix(filepathClean(hdr.Name), "./")] = true
	}
}

func filepathClean(n string) string { return filepath.Clean("/" + n)[1:] }

// unpackArchive writes the regular files and directories of the OCI
// archive at path into dir, inside dir only.
func unpackArchive(ctx context.Context, path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	defer f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errorf(ErrCorrupt, "import %s: a damaged tar archive (%v): get a good copy", path, err)
		}
		n := filepathClean(hdr.Name)
		if n == "" {
			continue
		}
		if !filepath.IsLocal(n) {
			return errorf(ErrInvalid, "import %s: archive entry %q leads out of the archive: refusing an unsafe archive", path, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(n, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if d := filepath.Dir(n); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return err
				}
			}
			out, err := root.OpenFile(n, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.CopyN(out, tr, hdr.Size)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				if diskFull(err) {
					return err
				}
				return errorf(ErrCorrupt, "import %s: a damaged tar archive (%v): get a good copy", path, err)
			}
		default:
			// An OCI layout holds files and directories only.
		}
	}
}

// fromDockerTarball opens the image in a docker save tarball.
func fromDockerTarball(path, ref string) (*source, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, errorf(ErrCorrupt, "import %s: its manifest.json cannot be read (%v): get a good copy", path, err)
	}
	if len(m) == 0 {
		return nil, errorf(ErrInvalid, "import %s: the archive holds no image", path)
	}
	var pick *tarball.Descriptor
	switch {
	case ref != "":
		want, err := normalizeRef(ref)
		if err != nil {
			return nil, err
		}
		for i := range m {
			for _, t := range m[i].RepoTags {
				if n, err := normalizeRef(t); err == nil && n == want {
					pick = &m[i]
				}
			}
		}
		if pick == nil {
			return nil, errorf(ErrNotFound, "import %s: no image named %s in it (it has %s)", path, ref, dockerTags(m))
		}
	case len(m) == 1:
		pick = &m[0]
	default:
		return nil, errorf(ErrInvalid, "import %s: the archive holds %d images (%s): pick one by name", path, len(m), dockerTags(m))
	}
	var tag *name.Tag
	src := &source{name: path}
	for _, t := range pick.RepoTags {
		nt, err := name.NewTag(t)
		if err != nil {
			continue
		}
		if tag == nil {
			tag = &nt
		}
		src.refs = append(src.refs, nt.Name())
	}
	if len(m) > 1 && tag == nil {
		return nil, errorf(ErrInvalid, "import %s: the image picked has no name to open it by", path)
	}
	if len(m) == 1 {
		tag = nil // the only image; tarball.Image needs no tag for it
	}
	img, err := tarball.Image(opener, tag)
	if err != nil {
		return nil, errorf(ErrCorrupt, "import %s: %v: get a good copy", path, err)
	}
	src.img = img
	return src, nil
}

func dockerTags(m tarball.Manifest) string {
	var tags []string
	for _, d := range m {
		tags = append(tags, d.RepoTags...)
	}
	if len(tags) == 0 {
		return "no names"
	}
	return strings.Join(tags, ", ")
}

// Annotations naming an image in an OCI layout's index.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// fromLayout picks the linux/amd64 image in the OCI layout dir (named by
// ref when it holds several). what names the layout in messages.
func fromLayout(what, dir, ref string) (*source, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, errorf(ErrCorrupt, "import %s: its index.json cannot be read (%v): give an OCI image layout", what, err)
	}
	want := ""
	if ref != "" {
		if want, err = normalizeRef(ref); err != nil {
			return nil, err
		}
	}
	type cand struct {
		desc v1.Descriptor
		idx  v1.ImageIndex
		refs []string
	}
	var cands []cand
	var platforms []string
	var walk func(ix v1.ImageIndex, refs []string, depth int) error
	walk = func(ix v1.ImageIndex, refs []string, depth int) error {
		im, err := ix.IndexManifest()
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			r := refs
			if n := layoutRef(d.Annotations); n != "" {
				r = []string{n}
			}
			switch {
			case d.MediaType.IsIndex() && depth < 4:
				child, err := ix.ImageIndex(d.Digest)
				if err != nil {
					return err
				}
				if err := walk(child, r, depth+1); err != nil {
					return err
				}
			case d.MediaType.IsImage():
				if d.Platform != nil {
					p := d.Platform.OS + "/" + d.Platform.Architecture
					if p == "unknown/unknown" {
						continue // attestations
					}
					if p != Platform {
						platforms = append(platforms, p)
						continue
					}
				}
				if want != "" && !slices.Contains(r, want) {
					continue
				}
				cands = append(cands, cand{desc: d, idx: ix, refs: r})
			}
		}
		return nil
	}
	if err := walk(idx, nil, 0); err != nil {
		return nil, errorf(ErrCorrupt, "import %s: %v: give a complete OCI image layout", what, err)
	}
	// Several entries may name one image.
	var picked []cand
	for _, c := range cands {
		i := slices.IndexFunc(picked, func(p cand) bool { return p.desc.Digest == c.desc.Digest })
		if i < 0 {
			picked = append(picked, c)
			continue
		}
		picked[i].refs = append(picked[i].refs, c.refs...)
	}
	switch {
	case len(picked) == 0 && want != "":
		return nil, errorf(ErrNotFound, "import %s: no %s image named %s in it", what, Platform, ref)
	case len(picked) == 0 && len(platforms) > 0:
		slices.Sort(platforms)
		return nil, errorf(ErrNotSupported, "import %s: no %s image in it (it has %s): kindling runs %s images only", what, Platform, strings.Join(slices.Compact(platforms), ", "), Platform)
	case len(picked) == 0:
		return nil, errorf(ErrInvalid, "import %s: the layout holds no image", what)
	case len(picked) > 1:
		var names []string
		for _, p := range picked {
			names = append(names, p.refs...)
		}
		return nil, errorf(ErrInvalid, "import %s: the layout holds %d images (%s): pick one by name", what, len(picked), strings.Join(names, ", "))
	}
	img, err := picked[0].idx.Image(picked[0].desc.Digest)
	if err != nil {
		return nil, errorf(ErrCorrupt, "import %s: %v: give a complete OCI image layout", what, err)
	}
	refs := picked[0].refs
	slices.Sort(refs)
	return &source{img: img, name: what, digest: picked[0].desc.Digest.String(), refs: slices.Compact(refs)}, nil
}

// layoutRef is the fully qualified name an index entry's annotations give,
// or "". A bare tag ("latest") names no repository and is ignored.
func layoutRef(ann map[string]string) string {
	for _, k := range []string{annotationContainerdName, annotationRefName} {
		v := ann[k]
		if v == "" || !strings.ContainsAny(v, ":/") {
			continue
		}
		if n, err := normalizeRef(v); err == nil {
			return n
		}
	}
	return ""
}

// pickPlatform finds the linux/amd64 image of an index pulled as ref.
func pickPlatform(ref string, idx v1.ImageIndex) (v1.Descriptor, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, pullErr(ref, err)
	}
	var platforms []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if p == Platform {
			return d, nil
		}
		if p != "unknown/unknown" {
			platforms = append(platforms, p)
		}
	}
	slices.Sort(platforms)
	return v1.Descriptor{}, errorf(ErrNotSupported, "pull %s: no %s image (it has %s): kindling runs %s images only", ref, Platform, strings.Join(slices.Compact(platforms), ", "), Platform)
}

func normalizeRefs(in []string) ([]string, error) {
	var out []string
	for _, t := range in {
		n, err := normalizeRef(t)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// add stores src's image and builds its root filesystem, unless the store
// has it already; see Import.
func (s *Store) add(ctx context.Context, src *source, bo BuildOptions, fn func(Event)) (_ Image, err error) {
	cfgName, err := src.img.ConfigName()
	if err != nil {
		return Image{}, errorf(ErrCorrupt, "import %s: read its configuration: %v: get a good copy", src.name, err)
	}
	cf, err := src.img.ConfigFile()
	if err != nil {
		return Image{}, errorf(ErrCorrupt, "import %s: read its configuration: %v: get a good copy", src.name, err)
	}
	if p := cf.OS + "/" + cf.Architecture; p != Platform {
		return Image{}, errorf(ErrNotSupported, "import %s: the image is for %s: kindling runs %s images only", src.name, p, Platform)
	}
	if !configOf(cf).Runnable() {
		return Image{}, errorf(ErrInvalid, "import %s: the image has neither an entrypoint nor a command, so a sandbox has nothing to run: rebuild it with a CMD or ENTRYPOINT", src.name)
	}
	// The configuration lists the layers: asking the image for them may
	// read them (a docker save tarball's are hashed).
	layers := cf.RootFS.DiffIDs
	ag, err := readAgent(bo.Agent)
	if err != nil {
		return Image{}, err
	}
	agentSHA := ""
	if ag != nil {
		agentSHA = ag.sha
	}
	h := cfgName.Hex
	id := "sha256:" + h
	prog := &progress{fn: fn, id: id, layers: len(layers)}
	prog.emit(Event{Kind: EventResolved})

	l, err := store.LockFile(ctx, s.lockPath(h), store.Exclusive)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", src.name, err)
	}
	defer func() {
		if _, serr := os.Lstat(filepath.Join(s.imageDir(h), recordFile)); errors.Is(serr, os.ErrNotExist) {
			// A failed first build: take away every trace of it.
			os.RemoveAll(s.imageDir(h))
			l.Drop()
		}
		l.Unlock()
	}()
	if _, err := s.cleanLocked(h); err != nil {
		return Image{}, fmt.Errorf("import %s: clean an earlier build: %w", src.name, err)
	}
	im, err := s.load(h)
	switch {
	case errors.Is(err, ErrNotFound):
		im = Image{
			ID:       id,
			Platform: Platform,
			Created:  cf.Created.Time.UTC(),
			Imported: s.now().UTC(),
			Source:   cmp.Or(src.origin, src.name),
			Layers:   len(layers),
			Config:   configOf(cf),
		}
	case err != nil:
		return Image{}, fmt.Errorf("import %s: %w", src.name, err)
	}
	if im.Digest == "" {
		im.Digest = src.digest
	}
	if r, ok := im.RootFSFor(agentSHA); ok {
		if _, err := os.Stat(r.Path); err == nil {
			prog.emit(Event{Kind: EventCached})
			out, err := s.tag(ctx, im, src.refs)
			if err != nil {
				return Image{}, fmt.Errorf("import %s: %w", src.name, err)
			}
			prog.emit(Event{Kind: EventDone})
			return out, nil
		}
		im.RootFS = slices.DeleteFunc(im.RootFS, func(x RootFS) bool { return x.Agent == agentSHA })
	}
	r, st, err := s.build(ctx, src, cf, h, ag, prog)
	if err != nil {
		return Image{}, err
	}
	im.RootFS = append(im.RootFS, r)
	im.Size = st.Bytes
	out, err := s.tag(ctx, im, src.refs)
	if err != nil {
		os.Remove(r.Path)
		return Image{}, fmt.Errorf("import %s: %w", src.name, err)
	}
	prog.emit(Event{Kind: EventDone})
	return out, nil
}
