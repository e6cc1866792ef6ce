package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// progressImage is a linux/amd64 image of two layers, the second holding
// size bytes of data.
func progressImage(t *testing.T, size int) v1.Image {
	t.Helper()
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	layerOf := func(name string, data []byte) v1.Layer {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: mod}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		raw := b.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	big := bytes.Repeat([]byte("kindling progress\n"), size/18)
	img, err := mutate.AppendLayers(empty.Image, layerOf("app", []byte("#!/bin/sh\necho hi\n")), layerOf("data", big))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: mod}
	cf.Config = v1.Config{Entrypoint: []string{"/app"}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// runOnTerminal runs the kindling command line args with stderr on a
// pseudo-terminal and returns its stdout, what the terminal received and
// the error.
func runOnTerminal(t *testing.T, args ...string) (stdout, term string, err error) {
	t.Helper()
	tty, reader := openPTY(t)
	var (
		got bytes.Buffer
		wg  sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		for {
			n, rerr := reader.Read(buf)
			got.Write(buf[:n])
			if rerr != nil {
				return
			}
		}
	}()
	var out bytes.Buffer
	err = run(context.Background(), args, &out, tty)
	// Once the terminal's end is closed, the reader gets what is left,
	// then EIO.
	tty.Close()
	wg.Wait()
	return out.String(), got.String(), err
}

// TestProgressImageTerminal imports and pulls an image with stderr on a
// terminal: the progress line shows the layers, the bytes read and the
// rate, and is erased at the end; -q shows nothing there; --json prints
// the events (layers with bytes and rate) on stdout and nothing on the
// terminal either.
func TestProgressImageTerminal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("building a root filesystem needs root")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not found: install e2fsprogs")
	}
	testutil.CheckLeaks(t)
	agentBin, err := testutil.AgentBinaryPath()
	if err != nil {
		t.Fatal(err)
	}
	img := progressImage(t, 2<<20)
	dir := t.TempDir()
	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "progress:1"})); err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://") + "/progress:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
	id, _ := img.ConfigName()
	short := id.Hex[:12]

	// Each run has a store of its own, so that each builds.
	root := func() string {
		r, err := os.MkdirTemp(dir, "root")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tt := range []struct{ name, cmd, src string }{
		{"import", "import", lay},
		{"pull", "pull", ref.String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout, term, err := runOnTerminal(t, "--root", root(), "image", tt.cmd, "--agent", agentBin, tt.src)
			if err != nil {
				t.Fatalf("%v; terminal: %q", err, term)
			}
			if strings.TrimSpace(stdout) != "sha256:"+id.Hex {
				t.Errorf("stdout = %q, want the image ID", stdout)
			}
			for _, want := range []string{
				short + ": 2 layers",
				short + ": layer 1/2 ",
				short + ": layer 2/2 ",
				"2 done, 2.0 MiB read at ", // both layers, their bytes, a rate
				"/s",
				short + ": writing the ext4 root filesystem",
				short + ": done",
			} {
				if !strings.Contains(term, want) {
					t.Errorf("terminal shows %q, want it to hold %q", term, want)
				}
			}
			if !strings.HasSuffix(term, "\r\x1b[K") {
				t.Errorf("terminal shows %q, want the line erased at the end", term)
			}

			// -q: nothing on the terminal.
			stdout, term, err = runOnTerminal(t, "--root", root(), "image", tt.cmd, "-q", "--agent", agentBin, tt.src)
			if err != nil || strings.TrimSpace(stdout) != "sha256:"+id.Hex || term != "" {
				t.Errorf("-q: stdout %q, terminal %q, err %v; want the ID, nothing, nil", stdout, term, err)
			}

			// --json: the events on stdout, nothing on the terminal.
			stdout, term, err = runOnTerminal(t, "--root", root(), "image", tt.cmd, "--json", "--agent", agentBin, tt.src)
			if err != nil || term != "" {
				t.Errorf("--json: terminal %q, err %v; want nothing, nil", term, err)
			}
			kinds := map[string]int{}
			var lastLayer map[string]any
			sc := bufio.NewScanner(strings.NewReader(stdout))
			for sc.Scan() {
				var ev map[string]any
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					t.Fatalf("--json line %q: %v", sc.Text(), err)
				}
				k, _ := ev["event"].(string)
				kinds[k]++
				if k == "layer" && ev["layer_done"] == true && ev["layer"] == 2.0 {
					lastLayer = ev
				}
			}
			for _, k := range []string{"resolved", "layer", "build", "done", "image"} {
				if kinds[k] == 0 {
					t.Errorf("--json has no %q event: %s", k, stdout)
				}
			}
			if lastLayer == nil || lastLayer["bytes"].(float64) < 2<<20 || lastLayer["rate"].(float64) <= 0 || lastLayer["layers"] != 2.0 {
				t.Errorf("--json: last event of layer 2 = %v, want its bytes (≥ 2 MiB), a rate and 2 layers", lastLayer)
			}
		})
	}
}
