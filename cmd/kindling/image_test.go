package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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
	"github.com/rogpeppe/go-internal/testscript"
)

// TestImageScripts runs the scripts in testdata/image: the image commands,
// with images built by the test and a registry served by the test process
// on loopback ($REGISTRY, holding $REGISTRY/app:1).
func TestImageScripts(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close) // the scripts run in parallel, after this function returns
	host := strings.TrimPrefix(reg.URL, "http://")
	ref, err := name.ParseReference(host + "/app:1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := scriptImage("pulled")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "image"),
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			root, err := os.MkdirTemp("", "kd")
			if err != nil {
				return err
			}
			env.Setenv("KINDLING_ROOT", root)
			env.Setenv("REGISTRY", host)
			env.Setenv("DOCKER_CONFIG", filepath.Join(env.WorkDir, ".docker"))
			env.Defer(func() {
				// The scripts remove their images: the store must be empty.
				var left []string
				des, _ := os.ReadDir(filepath.Join(root, imagesDir, "sha256"))
				for _, de := range des {
					left = append(left, de.Name())
				}
				if err := os.RemoveAll(root); err != nil {
					left = append(left, fmt.Sprintf("remove root: %v", err))
				}
				if len(left) > 0 {
					env.T().Fatal("the script left images: " + strings.Join(left, "; "))
				}
			})
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkimage":   cmdMkImage,
			"fakeagent": cmdFakeAgent,
			"exitcode":  cmdExitCode,
			"capture":   cmdCapture,
			"jsonget":   cmdJSONGet,
		},
	})
}

// scriptImage is a small linux/amd64 image whose /bin/app prints marker.
func scriptImage(marker string) (v1.Image, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mod := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	body := "#!/bin/sh\necho " + marker + "\n"
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755, ModTime: mod},
		{Typeflag: tar.TypeReg, Name: "bin/app", Mode: 0o755, Size: int64(len(body)), ModTime: mod},
		{Typeflag: tar.TypeDir, Name: "srv/", Mode: 0o755, ModTime: mod},
	} {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: mod}
	cf.Config = v1.Config{Entrypoint: []string{"/bin/app"}, WorkingDir: "/srv", Env: []string{"PATH=/bin"}}
	return mutate.ConfigFile(img, cf)
}

// cmdMkImage writes a test image: mkimage docker|layout FILE NAME MARKER.
func cmdMkImage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: mkimage docker|layout PATH NAME MARKER")
	}
	img, err := scriptImage(args[3])
	ts.Check(err)
	p := ts.MkAbs(args[1])
	switch args[0] {
	case "docker":
		tag, err := name.NewTag(args[2])
		ts.Check(err)
		ts.Check(tarball.WriteToFile(p, tag, img))
	case "layout":
		lp, err := layout.Write(p, empty.Index)
		ts.Check(err)
		ts.Check(lp.AppendImage(img, layout.WithAnnotations(map[string]string{"io.containerd.image.name": args[2]})))
	default:
		ts.Fatalf("mkimage: unknown format %q", args[0])
	}
}

// cmdFakeAgent writes a file that passes for the agent binary: fakeagent
// FILE.
func cmdFakeAgent(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: fakeagent FILE")
	}
	b := append([]byte("\x7fELF"), bytes.Repeat([]byte("agent"), 100)...)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o755))
}
