package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/gotool"
)

// The image scenarios: importing an image, the per-sandbox copy of its
// root filesystem, and 'kindling run IMAGE -- true' on the simulated
// guest. Their images are made here with go-containerregistry (no
// network); building one needs root (owners, device nodes) and e2fsprogs.

// bigImageMiB is the size of the import scenario's image: random bytes,
// so that neither gzip nor the file system can make it smaller.
const bigImageMiB = 200

// copyImageSize is the apparent size of the base file the copy scenarios
// copy: the imported image's root filesystem grown to 1 GiB.
const copyImageSize = 1 << 30

// imageBox holds what the image scenarios share, made on first use.
type imageBox struct {
	once  sync.Once
	err   error
	agent string // the guest agent, built for the bench
	fake  string // the fake Firecracker (its simulated guest)
	big   string // OCI layout of the 200 MiB image
	layer string // its layer blob (gzip)
	small string // OCI layout of a busybox image, for run IMAGE
	// base is the 1 GiB root filesystem the copy scenarios copy.
	baseOnce sync.Once
	baseErr  error
	base     string
}

// imageFacts are what the copy scenarios found, for their rows' titles:
// the file system of each place and the method image.Clone used there.
var imageFacts struct {
	mu    sync.Mutex        // guards facts
	facts map[string]string // metric key → "ext4, sparse"
}

func noteFact(key, fact string) {
	imageFacts.mu.Lock()
	defer imageFacts.mu.Unlock()
	if imageFacts.facts == nil {
		imageFacts.facts = map[string]string{}
	}
	imageFacts.facts[key] = fact
}

func fact(key string) string {
	imageFacts.mu.Lock()
	defer imageFacts.mu.Unlock()
	if f := imageFacts.facts[key]; f != "" {
		return f
	}
	return "not measured"
}

// imageBoxes holds each env's imageBox (a test runs the bench more than
// once in one process).
var imageBoxes struct {
	mu sync.Mutex // guards m
	m  map[*env]*imageBox
}

// imagesOf returns e's imageBox.
func imagesOf(e *env) *imageBox {
	imageBoxes.mu.Lock()
	defer imageBoxes.mu.Unlock()
	if imageBoxes.m == nil {
		imageBoxes.m = map[*env]*imageBox{}
	}
	b := imageBoxes.m[e]
	if b == nil {
		b = &imageBox{}
		imageBoxes.m[e] = b
	}
	return b
}

// xfsReady says why the XFS copy scenario cannot run here, or nil.
func xfsReady() error {
	if err := imageReady(); err != nil {
		return err
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		return errors.New("the XFS copy needs mkfs.xfs (install xfsprogs)")
	}
	return nil
}

// imageReady says why the image scenarios cannot run here, or nil.
func imageReady() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("building an image needs root (running as uid %d)", os.Geteuid())
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "resize2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("building an image needs %s (install e2fsprogs)", tool)
		}
	}
	return nil
}

// prepare builds the agent and the fake Firecracker and writes the
// images' layouts, once.
func (b *imageBox) prepare(ctx context.Context, e *env) error {
	b.once.Do(func() { b.err = b.make(ctx, e) })
	return b.err
}

func (b *imageBox) make(ctx context.Context, e *env) error {
	if err := imageReady(); err != nil {
		return err
	}
	modRoot, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	goBin, err := gotool.Path()
	if err != nil {
		return err
	}
	b.agent = filepath.Join(e.tmp, "image-agent")
	b.fake = filepath.Join(e.tmp, "image-fake-firecracker")
	for pkg, out := range map[string]string{"./cmd/kindling-agent": b.agent, "./internal/cmd/fake-firecracker": b.fake} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
		cmd.Dir = modRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", pkg, err, strings.TrimSpace(string(out)))
		}
	}
	if b.big, b.layer, err = writeBigImage(filepath.Join(e.tmp, "big-layout")); err != nil {
		return err
	}
	b.small, err = writeBusyboxImage(filepath.Join(e.tmp, "small-layout"))
	return err
}

// writeBigImage writes an OCI layout holding one image whose single layer
// has bigImageMiB files of 1 MiB of random bytes (gzip at its fastest,
// which stores them). It returns the layout and the layer blob's path.
func writeBigImage(dir string) (string, string, error) {
	rng := rand.NewChaCha8([32]byte{'k', 'i', 'n', 'd', 'l', 'i', 'n', 'g'})
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	open := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			rng := *rng // the same bytes each time the layer is read
			err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: when})
			buf := make([]byte, 1<<20)
			for i := 0; err == nil && i < bigImageMiB; i++ {
				rng.Read(buf)
				if err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data/f%03d", i), Mode: 0o644, Size: int64(len(buf)), ModTime: when}); err == nil {
					_, err = tw.Write(buf)
				}
			}
			if err == nil {
				err = tw.Close()
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
	l, err := tarball.LayerFromOpener(open, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return "", "", err
	}
	return writeLayout(dir, l, "bench-big:1", v1.Config{Cmd: []string{"/bin/true"}}, when)
}

// writeBusyboxImage writes an OCI layout of the host's static busybox as
// /bin/sh, /bin/true and a few more, for run IMAGE.
func writeBusyboxImage(dir string) (string, error) {
	bbPath, err := exec.LookPath("busybox")
	if err != nil {
		bbPath = "/bin/busybox"
	}
	bb, err := os.ReadFile(bbPath)
	if err != nil {
		return "", fmt.Errorf("run IMAGE needs a static busybox for its image (install busybox-static): %w", err)
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var entries []tar.Header
	var data [][]byte
	add := func(h tar.Header, b []byte) {
		h.ModTime, h.Size = when, int64(len(b))
		entries, data = append(entries, h), append(data, b)
	}
	for _, d := range []string{"bin/", "etc/", "proc/", "sys/", "dev/", "run/", "tmp/"} {
		add(tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil)
	}
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, bb)
	for _, a := range []string{"sh", "true", "cat"} {
		add(tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}, nil)
	}
	open := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			var err error
			for i := range entries {
				if err = tw.WriteHeader(&entries[i]); err != nil {
					break
				}
				if _, err = tw.Write(data[i]); err != nil {
					break
				}
			}
			if err == nil {
				err = tw.Close()
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
	l, err := tarball.LayerFromOpener(open)
	if err != nil {
		return "", err
	}
	out, _, err := writeLayout(dir, l, "bench-bbox:1", v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"true"}}, when)
	return out, err
}

// writeLayout writes an OCI layout at dir of a linux/amd64 image of layer
// l named ref, and returns dir and the layer blob's path.
func writeLayout(dir string, l v1.Layer, ref string, c v1.Config, when time.Time) (string, string, error) {
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return "", "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: when}
	cf.Config = c
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", "", err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", "", err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return "", "", err
	}
	d, err := l.Digest()
	if err != nil {
		return "", "", err
	}
	return dir, filepath.Join(dir, "blobs", d.Algorithm, d.Hex), nil
}

// imageScenarios are the image rows: import (cold and cached), the
// per-sandbox copy (on the bench's directory, and on a loop-mounted XFS
// where reflinks work), and run IMAGE -- true on the simulated guest.
// Where they cannot run (not root, no e2fsprogs; no mkfs.xfs for the XFS
// copy) they are left out, as the agent scenarios are.
func imageScenarios() []scenario {
	if imageReady() != nil {
		return nil
	}
	list := []scenario{importScenario(), copyScenario("rootfs_copy", false)}
	if xfsReady() == nil {
		list = append(list, copyScenario("rootfs_copy_xfs", true))
	}
	return append(list, runImageScenario())
}

// imageMetricDefs are the image rows of the report.
func imageMetricDefs() []metricDef {
	copyTime := map[string]target{pathLib: {absBelow, 0.005}}
	copyDisk := map[string]target{pathLib: {absAtMost, 1 << 20}}
	if imageReady() != nil {
		return nil
	}
	defs := []metricDef{
		{key: "image_import_cold", title: fmt.Sprintf("import a %d MiB image, cold (raw: tar -xzf + mkfs.ext4 -d, lazy init)", bigImageMiB), kind: kindTime},
		{key: "image_import_cached", title: "import it again, in the store already", kind: kindTime},
		{key: "rootfs_copy", title: "rootfs copy per sandbox, 1 GiB image, bench dir: " + fact("rootfs_copy") + " (raw: cp --sparse=always --reflink=auto)", kind: kindTime, targets: copyTime},
		{key: "rootfs_copy_disk", title: "  new disk taken by that copy (unshared extents)", kind: kindBytes, targets: copyDisk},
	}
	if xfsReady() == nil {
		defs = append(defs,
			metricDef{key: "rootfs_copy_xfs", title: "rootfs copy per sandbox, 1 GiB image, loop-mounted XFS: " + fact("rootfs_copy_xfs"), kind: kindTime, targets: copyTime},
			metricDef{key: "rootfs_copy_xfs_disk", title: "  new disk taken by that copy on XFS (unshared extents)", kind: kindBytes, targets: copyDisk})
	}
	return append(defs, metricDef{key: "run_image", title: "run IMAGE -- true, end to end (simulated guest; raw: cp + fake Firecracker by API + agent exec)", kind: kindTime})
}

// importScenario times an import of the 200 MiB image into a store that
// does not have it, then again. The raw floor does what an import must:
// unpack the layer and make an ext4 of the tree with mke2fs.
func importScenario() scenario {
	imp := func(do func(ctx context.Context, e *env) (id string, err error), rm func(ctx context.Context, e *env, id string) error) setupFunc {
		return func(ctx context.Context, e *env) (iterFunc, func(), error) {
			if err := imagesOf(e).prepare(ctx, e); err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) {
				t0 := time.Now()
				id, err := do(ctx, e)
				if err != nil {
					return nil, err
				}
				t1 := time.Now()
				if _, err := do(ctx, e); err != nil {
					return nil, err
				}
				t2 := time.Now()
				if err := rm(ctx, e, id); err != nil {
					return nil, err
				}
				return sample{"image_import_cold": seconds(t1.Sub(t0)), "image_import_cached": seconds(t2.Sub(t1))}, nil
			}, func() {}, nil
		}
	}
	return scenario{key: "image_import", paths: map[string]setupFunc{
		pathRaw: func(ctx context.Context, e *env) (iterFunc, func(), error) {
			if err := imagesOf(e).prepare(ctx, e); err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) {
				dir, err := e.newDir("ri")
				if err != nil {
					return nil, err
				}
				defer os.RemoveAll(dir)
				root := filepath.Join(dir, "root")
				if err := os.Mkdir(root, 0o755); err != nil {
					return nil, err
				}
				// The same size as kindling gives it: data + 10 % + 256 MiB.
				size := fmt.Sprintf("%dM", bigImageMiB*11/10+256)
				t0 := time.Now()
				if err := runTool(ctx, "tar", "-xzf", imagesOf(e).layer, "-C", root); err != nil {
					return nil, err
				}
				// The journal and inode tables left lazy, as kindling's are.
				if err := runTool(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_journal_init=1,lazy_itable_init=1", "-d", root, filepath.Join(dir, "rootfs.ext4"), size); err != nil {
					return nil, err
				}
				return sample{"image_import_cold": seconds(time.Since(t0))}, nil
			}, func() {}, nil
		},
		pathLib: imp(func(ctx context.Context, e *env) (string, error) {
			s, err := image.Open(filepath.Join(e.root, ".images"))
			if err != nil {
				return "", err
			}
			im, err := s.Import(ctx, imagesOf(e).big, image.ImportOptions{BuildOptions: image.BuildOptions{Agent: imagesOf(e).agent}})
			return im.ID, err
		}, func(ctx context.Context, e *env, id string) error {
			s, err := image.Open(filepath.Join(e.root, ".images"))
			if err != nil {
				return err
			}
			_, err = s.Remove(ctx, id, image.RemoveOptions{Force: true})
			return err
		}),
		pathCLI: imp(func(ctx context.Context, e *env) (string, error) {
			out, err := cli(ctx, e, "image", "import", "-q", "--agent", imagesOf(e).agent, imagesOf(e).big)
			return strings.TrimSpace(out), err
		}, func(ctx context.Context, e *env, id string) error {
			_, err := cli(ctx, e, "image", "rm", "-f", id)
			return err
		}),
	}}
}

func runTool(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// baseRootfs is the 1 GiB root filesystem the copy scenarios copy: the
// 200 MiB image's, imported once into a store of its own and grown.
func (b *imageBox) baseRootfs(ctx context.Context, e *env) (string, error) {
	b.baseOnce.Do(func() {
		s, err := image.Open(filepath.Join(e.tmp, "copy-images"))
		if err != nil {
			b.baseErr = err
			return
		}
		im, err := s.Import(ctx, b.big, image.ImportOptions{BuildOptions: image.BuildOptions{Agent: b.agent}})
		if err != nil {
			b.baseErr = err
			return
		}
		b.base = filepath.Join(e.tmp, "base-1g.ext4")
		if b.baseErr = image.Clone(im.RootFS[0].Path, b.base); b.baseErr == nil {
			b.baseErr = image.Grow(ctx, b.base, copyImageSize)
		}
	})
	return b.base, b.baseErr
}

// copyScenario times the copy of the 1 GiB root filesystem a sandbox
// gets, and the disk it takes: in the bench's directory, or (xfs) on a
// loop-mounted XFS made with reflink=1, where the copy can share extents.
func copyScenario(key string, xfs bool) scenario {
	setup := func(copyFn func(base, dst string) (string, error)) setupFunc {
		return func(ctx context.Context, e *env) (iterFunc, func(), error) {
			if err := imagesOf(e).prepare(ctx, e); err != nil {
				return nil, nil, err
			}
			base, err := imagesOf(e).baseRootfs(ctx, e)
			if err != nil {
				return nil, nil, err
			}
			teardown := func() {}
			if xfs {
				if base, teardown, err = xfsBase(ctx, e, base); err != nil {
					return nil, nil, err
				}
			}
			kind := fsKind(filepath.Dir(base))
			return func(ctx context.Context) (sample, error) {
				dst := filepath.Join(filepath.Dir(base), fmt.Sprintf("copy%d.ext4", e.seq.Add(1)))
				defer os.Remove(dst)
				t0 := time.Now()
				how, err := copyFn(base, dst)
				if err != nil {
					return nil, err
				}
				d := time.Since(t0)
				used, err := unsharedBytes(dst)
				if err != nil {
					return nil, err
				}
				if how != "" {
					noteFact(key, kind+", "+how)
				}
				return sample{key: seconds(d), key + "_disk": float64(used)}, nil
			}, teardown, nil
		}
	}
	return scenario{key: key, paths: map[string]setupFunc{
		pathRaw: setup(func(base, dst string) (string, error) {
			return "", runTool(context.Background(), "cp", "--sparse=always", "--reflink=auto", base, dst)
		}),
		pathLib: setup(image.CloneMethod),
	}}
}

// xfsBase makes a sparse 4 GiB XFS file system (reflink=1), mounts it on
// a loop device under the bench's directory and copies base into it. The
// returned func unmounts it (the loop device goes with it).
func xfsBase(ctx context.Context, e *env, base string) (string, func(), error) {
	if err := xfsReady(); err != nil {
		return "", nil, err
	}
	dir, err := e.newDir("xfs")
	if err != nil {
		return "", nil, err
	}
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	fail := func(err error) (string, func(), error) { os.RemoveAll(dir); return "", nil, err }
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Truncate(img, 4<<30); err != nil {
		return fail(err)
	}
	if err := runTool(ctx, "mkfs.xfs", "-q", "-m", "reflink=1", img); err != nil {
		return fail(err)
	}
	if err := runTool(ctx, "mount", "-o", "loop", img, mnt); err != nil {
		return fail(err)
	}
	umount := func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		os.RemoveAll(dir)
	}
	dst := filepath.Join(mnt, "base.ext4")
	if err := runTool(ctx, "cp", "--sparse=always", base, dst); err != nil {
		umount()
		return "", nil, err
	}
	return dst, umount, nil
}

// fsKind names the file system dir is on.
func fsKind(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs 0x%x", uint32(st.Type))
}

// unsharedBytes is the disk a file takes that no other file shares: the
// length of its extents FIEMAP does not flag as shared (a reflink copy
// takes none). Where FIEMAP is not supported, its allocated blocks.
func unsharedBytes(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	const (
		fsIocFiemap   = 0xC020660B // _IOWR('f', 11, struct fiemap)
		flagSync      = 0x1
		extentLast    = 0x1
		extentShared  = 0x2000
		headerSize    = 32 // struct fiemap
		extentSize    = 56 // struct fiemap_extent
		extentsPerReq = 256
	)
	buf := make([]uint64, (headerSize+extentSize*extentsPerReq)/8)
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8)
	var start uint64
	var total int64
	for {
		clear(raw)
		binary.NativeEndian.PutUint64(raw[0:], start)
		binary.NativeEndian.PutUint64(raw[8:], ^uint64(0)-start)
		binary.NativeEndian.PutUint32(raw[16:], flagSync)
		binary.NativeEndian.PutUint32(raw[24:], extentsPerReq)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0])))
		if errno != 0 {
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				return 0, err
			}
			return st.Blocks * 512, nil
		}
		mapped := int(binary.NativeEndian.Uint32(raw[20:]))
		if mapped == 0 {
			return total, nil
		}
		for i := range mapped {
			x := raw[headerSize+extentSize*i:]
			logical, length := binary.NativeEndian.Uint64(x[0:]), binary.NativeEndian.Uint64(x[16:])
			flags := binary.NativeEndian.Uint32(x[40:])
			if flags&extentShared == 0 {
				total += int64(length)
			}
			start = logical + length
			if flags&extentLast != 0 {
				return total, nil
			}
		}
	}
}

// runImageScenario times 'kindling run --rm IMAGE -- true' on the
// simulated guest against a raw floor doing the same by hand: copy the
// image's root filesystem (cp), run the fake Firecracker, configure and
// start it over its API, wait until the agent answers an exec of true
// over the vsock socket, kill it and remove the copy.
func runImageScenario() scenario {
	ready := func(ctx context.Context, e *env) (image.RootFS, string, error) {
		if err := imagesOf(e).prepare(ctx, e); err != nil {
			return image.RootFS{}, "", err
		}
		s, err := image.Open(filepath.Join(e.root, ".images"))
		if err != nil {
			return image.RootFS{}, "", err
		}
		im, err := s.Import(ctx, imagesOf(e).small, image.ImportOptions{BuildOptions: image.BuildOptions{Agent: imagesOf(e).agent}})
		if err != nil {
			return image.RootFS{}, "", err
		}
		return im.RootFS[0], im.ID, nil
	}
	return scenario{key: "run_image", paths: map[string]setupFunc{
		pathRaw: func(ctx context.Context, e *env) (iterFunc, func(), error) {
			rfs, _, err := ready(ctx, e)
			if err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) {
				t0 := time.Now()
				if err := rawRunImage(ctx, e, rfs.Path); err != nil {
					return nil, err
				}
				return sample{"run_image": seconds(time.Since(t0))}, nil
			}, func() {}, nil
		},
		pathCLI: func(ctx context.Context, e *env) (iterFunc, func(), error) {
			if _, _, err := ready(ctx, e); err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) {
				id := e.newID("ri")
				e.track.addSandbox(id)
				defer e.track.dropSandbox(id)
				t0 := time.Now()
				if _, err := cli(ctx, e, "run", "--rm", "--name", id, "--firecracker", imagesOf(e).fake, "--kernel", e.halt, "bench-bbox:1", "--", "true"); err != nil {
					return nil, err
				}
				return sample{"run_image": seconds(time.Since(t0))}, nil
			}, func() {}, nil
		},
	}}
}

// rawRunImage is the raw floor of run IMAGE -- true.
func rawRunImage(ctx context.Context, e *env, base string) error {
	dir, err := e.newDir("rr")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if err := runTool(ctx, "cp", "--sparse=always", "--reflink=auto", base, rootfs); err != nil {
		return err
	}
	vm, err := startRawProcess(imagesOf(e).fake, dir, "")
	if err != nil {
		return err
	}
	e.track.addRaw(vm)
	defer func() { vm.kill(); e.track.dropRaw(vm) }()
	c := vm.client
	vsock := filepath.Join(dir, "v.sock")
	for _, r := range []struct{ path, body string }{
		{"/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`},
		{"/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":%q}`, e.halt, rawBootArgs+" "+image.BootArg)},
		{"/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":false}`, rootfs)},
		{"/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, vsock)},
		{"/actions", `{"action_type":"InstanceStart"}`},
	} {
		if err := c.do(ctx, http.MethodPut, r.path, r.body); err != nil {
			return err
		}
	}
	ag := newAgentRaw(vsock, "")
	for {
		code, err := ag.exec(ctx, "true")
		if err == nil {
			if code != 0 {
				return fmt.Errorf("raw: true exited with %d", code)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("raw: the agent never ran true: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
}
