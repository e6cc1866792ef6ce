package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestImportBadInput feeds Import what it must refuse: each gives a
// one-line error of the right kind and leaves nothing in the store.
func TestImportBadInput(t *testing.T) {
	testutil.CheckLeaks(t)
	needBuild(t)
	tmp := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := writeDockerTarball(t, simpleImage(t, "good"), "good:1")
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(goodBytes)
	zw.Close()

	// A layout whose layer blob does not match its digest.
	mismatch := writeLayout(t, simpleImage(t, "mismatch"), "")
	corruptLayerBlob(t, mismatch)

	escape := testImage(t, v1.Config{Cmd: []string{"/x"}}, layer(t, file("../../etc/kindling-escape", "pwned\n", 0o644, 0, 0)))
	// A hard link through an absolute symbolic link would write outside.
	absLink := testImage(t, v1.Config{Cmd: []string{"/x"}}, layer(t,
		symlink("hostetc", "/etc"),
		hardlink("stolen", "hostetc/hostname"),
	))
	danglingLink := testImage(t, v1.Config{Cmd: []string{"/x"}},
		layer(t, file("a", "a\n", 0o644, 0, 0), hardlink("b", "a")),
		layer(t, file(".wh.a", "", 0o644, 0, 0)),
	)
	arm := platformImage(t, "linux", "arm64", v1.Config{Cmd: []string{"/x"}}, layer(t, file("x", "x", 0o755, 0, 0)))
	windows := platformImage(t, "windows", "amd64", v1.Config{Cmd: []string{"/x"}}, layer(t, file("x", "x", 0o755, 0, 0)))

	tests := []struct {
		name  string
		path  string
		agent string
		kind  error
		text  string
	}{
		{"missing file", filepath.Join(tmp, "nosuch.tar"), "", ErrNotFound, "no such file"},
		{"not a tar", write("junk.tar", bytes.Repeat([]byte("junk"), 300)), "", ErrInvalid, "not a tar archive"},
		{"empty file", write("empty.tar", nil), "", ErrInvalid, "empty tar archive"},
		{"compressed", write("image.tar.gz", gz.Bytes()), "", ErrInvalid, "decompress it first"},
		{"truncated tarball", write("cut.tar", goodBytes[:len(goodBytes)/2+100]), "", ErrCorrupt, "damaged"},
		{"plain directory", tmp, "", ErrInvalid, "not an OCI image layout"},
		{"layer digest mismatch", mismatch, "", ErrCorrupt, "does not match its digest"},
		{"path escaping the root", writeDockerTarball(t, escape, "escape:1"), "", ErrCorrupt, "unsafe tar path"},
		{"absolute symlink followed", writeDockerTarball(t, absLink, "abslink:1"), "", ErrInvalid, "cannot be written inside the root filesystem (path escapes"},
		{"hard link to a deleted file", writeDockerTarball(t, danglingLink, "dangling:1"), "", ErrInvalid, "not in the image"},
		{"arm64 image", writeDockerTarball(t, arm, "arm:1"), "", ErrNotSupported, "linux/arm64"},
		{"windows image", writeLayout(t, windows, ""), "", ErrNotSupported, "windows/amd64"},
		{"agent not an executable", good, write("agent.txt", bytes.Repeat([]byte("#!"), 100)), ErrInvalid, "not an ELF executable"},
		{"agent missing", good, filepath.Join(tmp, "no-agent"), ErrInvalid, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.Import(context.Background(), tt.path, ImportOptions{BuildOptions: BuildOptions{Agent: tt.agent}})
			if err == nil {
				t.Fatal("Import succeeded")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q does not match %v", err, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			oneLine(t, err)
			if left := storeLeftovers(t, s); len(left) > 0 {
				t.Errorf("left in the store: %v", left)
			}
		})
	}
	if _, err := os.Lstat("/etc/kindling-escape"); err == nil {
		os.Remove("/etc/kindling-escape")
		t.Error("a layer wrote /etc/kindling-escape on the host")
	}
}

// corruptLayerBlob flips bytes in the largest blob of a layout that is
// not JSON (a layer), keeping its size.
func corruptLayerBlob(t *testing.T, dir string) {
	t.Helper()
	blobs, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var target string
	var size int64
	for _, b := range blobs {
		fi, err := os.Stat(b)
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 2)
		f, _ := os.Open(b)
		f.Read(head)
		f.Close()
		if head[0] == 0x1f && head[1] == 0x8b && fi.Size() > size {
			target, size = b, fi.Size()
		}
	}
	if target == "" {
		t.Fatal("no gzip layer in the layout")
	}
	// Rewrite the layer as another valid gzip tar of the same length or
	// more: the content parses, the digest does not match.
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "evil", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("evil\n"))
	tw.Close()
	zw.Close()
	if err := os.WriteFile(target, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImportNotRoot refuses to build without root, before writing
// anything.
func TestImportNotRoot(t *testing.T) {
	needBuild(t)
	geteuid = func() int { return 1000 }
	defer func() { geteuid = os.Geteuid }()
	s := openStore(t)
	_, err := s.Import(context.Background(), writeDockerTarball(t, simpleImage(t, "x"), "x:1"), ImportOptions{})
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "needs root") {
		t.Fatalf("Import as non-root = %v, want ErrNotSupported saying it needs root", err)
	}
	oneLine(t, err)
	if left := storeLeftovers(t, s); len(left) > 0 {
		t.Errorf("left in the store: %v", left)
	}
}

// TestImportNotRunnable refuses an image with neither entrypoint nor
// command, from a tarball and from a registry, before anything is stored.
func TestImportNotRunnable(t *testing.T) {
	needBuild(t)
	s := openStore(t)
	img := testImage(t, v1.Config{Env: []string{"PATH=/bin"}}, layer(t, file("data", "data\n", 0o644, 0, 0)))
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "neither an entrypoint nor a command") ||
			!strings.Contains(err.Error(), "rebuild it with a CMD or ENTRYPOINT") {
			t.Errorf("%s = %v, want ErrInvalid saying it has nothing to run and how to fix it", what, err)
		}
		oneLine(t, err)
		if left := storeLeftovers(t, s); len(left) > 0 {
			t.Errorf("%s: left in the store: %v", what, left)
		}
		if list, err := s.List(context.Background()); err != nil || len(list) != 0 {
			t.Errorf("%s: the store lists %v, %v; want nothing", what, list, err)
		}
	}
	tarPath := writeDockerTarball(t, img, "data:1")
	_, err := s.Import(context.Background(), tarPath, ImportOptions{})
	check("Import", err)
	if err != nil && !strings.Contains(err.Error(), tarPath) {
		t.Errorf("error %q does not name the image", err)
	}
	reg := newTestRegistry(t, "", "")
	ref := reg.push(t, "data/only:1", img)
	_, err = s.Pull(context.Background(), ref, PullOptions{})
	check("Pull", err)
	if !simpleImageConfig(t).Runnable() {
		t.Error("an image with an entrypoint is not runnable")
	}
}

func simpleImageConfig(t *testing.T) Config {
	cf, err := simpleImage(t, "x").ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return configOf(cf)
}

// TestImportDiskFull imports into a store on a tiny tmpfs: once with
// files larger than it (the staging tree fills it), once with files that
// fit twice but not with the ext4's metadata (mke2fs fills it).
func TestImportDiskFull(t *testing.T) {
	needBuild(t)
	for _, tt := range []struct {
		name string
		size int // bytes of file data
	}{
		{"staging", 4 << 20},
		{"mkfs", 1450 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "kindling-test", mnt).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() {
				if err := syscall.Unmount(mnt, 0); err != nil {
					t.Errorf("unmount %s: %v", mnt, err)
				}
			})
			s, err := Open(mnt)
			if err != nil {
				t.Fatal(err)
			}
			data := strings.Repeat("0123456789abcdef", tt.size/16)
			img := testImage(t, v1.Config{Cmd: []string{"/x"}}, layer(t, file("big", data, 0o644, 0, 0)))
			_, err = s.Import(context.Background(), writeDockerTarball(t, img, "big:1"), ImportOptions{})
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Import = %v, want ENOSPC", err)
			}
			if !strings.Contains(err.Error(), "free some space under "+mnt) {
				t.Errorf("error %q does not say where to free space", err)
			}
			if tt.name == "mkfs" && !strings.Contains(err.Error(), "build ext4") {
				t.Errorf("error %q is not from mke2fs", err)
			}
			oneLine(t, err)
			if left := storeLeftovers(t, s); len(left) > 0 {
				t.Errorf("left in the store: %v", left)
			}
		})
	}
}
