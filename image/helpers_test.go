package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// needBuild skips a test that builds root filesystems where it cannot:
// without root (owners and device nodes) or without e2fsprogs.
func needBuild(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("building a root filesystem needs root (owners, device nodes)")
	}
	for _, n := range []string{"mkfs.ext4", "debugfs", "e2fsck", "resize2fs"} {
		if _, err := tool(n); err != nil {
			t.Skipf("%v", err)
		}
	}
}

// entry is one file of a test layer.
type entry struct {
	hdr  tar.Header
	data string
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func dir(n string, mode int64, uid, gid int) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: mode, Uid: uid, Gid: gid, ModTime: testTime}}
}

func file(n, data string, mode int64, uid, gid int) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Uid: uid, Gid: gid, Size: int64(len(data)), ModTime: testTime}, data: data}
}

func symlink(n, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: n, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hardlink(n, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: n, Linkname: target, Mode: 0o644, ModTime: testTime}}
}

func device(n string, typ byte, major, minor int64, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: n, Mode: mode, Devmajor: major, Devminor: minor, ModTime: testTime}}
}

// layerTar writes entries as an uncompressed tar.
func layerTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.PAXRecords != nil {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// layer makes a (gzip) layer of entries.
func layer(t testing.TB, entries ...entry) v1.Layer {
	t.Helper()
	b := layerTar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage makes a linux/amd64 image of layers (bottom first) with cfg
// as its process configuration.
func testImage(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	return platformImage(t, "linux", "amd64", cfg, layers...)
}

func platformImage(t testing.TB, os, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = os, arch
	cf.Created = v1.Time{Time: testTime}
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// simpleImage is a small runnable image: a few files in one layer.
func simpleImage(t testing.TB, marker string) v1.Image {
	t.Helper()
	return testImage(t, v1.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/bin", "A=1"}, WorkingDir: "/srv", User: "1000:1000"},
		layer(t, dir("bin/", 0o755, 0, 0), file("bin/app", "#!/bin/sh\necho "+marker+"\n", 0o755, 0, 0), dir("srv/", 0o755, 1000, 1000)))
}

// writeDockerTarball writes img as a docker save tarball named tag.
func writeDockerTarball(t testing.TB, img v1.Image, tag string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(p, ref, img); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeLayout writes img into a new OCI layout, annotated with ref.
func writeLayout(t testing.TB, img v1.Image, ref string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(d, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	var opts []layout.Option
	if ref != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{annotationRefName: ref}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		t.Fatal(err)
	}
	return d
}

// tarDir writes the directory d as a tar file (an OCI archive when d is a
// layout).
func tarDir(t testing.TB, d string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "archive.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(d)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeAgent writes a small file that passes for the agent binary (an ELF
// header and padding).
func fakeAgent(t testing.TB, marker string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kindling-agent")
	b := append([]byte("\x7fELF"), bytes.Repeat([]byte(marker), 1024)...)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// debugfs runs a debugfs request on an ext4 file and returns its output.
func debugfs(t testing.TB, img, req string) string {
	t.Helper()
	p, err := tool("debugfs")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	return string(out)
}

// fsck checks an ext4 file with e2fsck -fn.
func fsck(t testing.TB, img string) {
	t.Helper()
	p, err := tool("e2fsck")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(p, "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// storeLeftovers lists what the store holds besides its empty skeleton
// (and the store-wide lock file for references).
func storeLeftovers(t testing.TB, s *Store) []string {
	t.Helper()
	var left []string
	for _, d := range []string{imagesDir, locksDir, tmpDir} {
		des, err := os.ReadDir(filepath.Join(s.dir, d))
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			if d == locksDir && de.Name() == refsLock {
				continue
			}
			left = append(left, filepath.Join(d, de.Name()))
		}
	}
	return left
}

func mustImport(t testing.TB, s *Store, path string, o ImportOptions) Image {
	t.Helper()
	im, err := s.Import(context.Background(), path, o)
	if err != nil {
		t.Fatalf("Import(%s): %v", path, err)
	}
	return im
}

// oneLine fails the test if err's text spans lines.
func oneLine(t testing.TB, err error) {
	t.Helper()
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Errorf("error spans lines: %q", err)
	}
}
