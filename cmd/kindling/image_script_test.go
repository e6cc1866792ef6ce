package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// busyboxImageApplets are the commands the test image links to busybox.
var busyboxImageApplets = []string{"sh", "echo", "cat", "id", "pwd", "env", "sha256sum", "stat", "ls", "sleep", "true"}

// cmdBusyboxImage writes an OCI layout holding a linux/amd64 image with
// the host's static busybox, and sets $AGENT to the guest agent binary to
// import it with: busyboximage DIR REF. Its entrypoint is /bin/busybox;
// its cmd prints the image's env, working directory and user and exits 7.
func cmdBusyboxImage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: busyboximage DIR REF")
	}
	agentBin, err := testutil.AgentBinaryPath()
	ts.Check(err)
	ts.Setenv("AGENT", agentBin)
	bbPath, err := exec.LookPath("busybox")
	if err != nil {
		bbPath = "/bin/busybox"
	}
	bb, err := os.ReadFile(bbPath)
	ts.Check(err)

	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	add := func(h tar.Header, data []byte) {
		h.ModTime = when
		h.Size = int64(len(data))
		ts.Check(tw.WriteHeader(&h))
		_, err := tw.Write(data)
		ts.Check(err)
	}
	dir := func(name string, mode int64, uid int) {
		add(tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid}, nil)
	}
	for _, d := range []string{"bin/", "etc/", "root/", "proc/", "sys/", "dev/", "run/"} {
		dir(d, 0o755, 0)
	}
	dir("tmp/", 0o1777, 0)
	dir("home/", 0o755, 0)
	dir("home/user/", 0o755, 1000)
	dir("srv/", 0o755, 1000)
	add(tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, bb)
	for _, a := range busyboxImageApplets {
		add(tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644},
		[]byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte("root:x:0:\nuser:x:1000:\n"))
	add(tar.Header{Typeflag: tar.TypeReg, Name: "srv/data.txt", Mode: 0o644, Uid: 1000, Gid: 1000}, []byte("from the image\n"))
	ts.Check(tw.Close())
	layerBytes := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	ts.Check(err)
	img, err := mutate.AppendLayers(empty.Image, l)
	ts.Check(err)
	cf, err := img.ConfigFile()
	ts.Check(err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: when}
	cf.Config = v1.Config{
		Entrypoint: []string{"/bin/busybox"},
		Cmd:        []string{"sh", "-c", "echo greeting=$GREETING; echo cwd=$(pwd); echo uid=$(id -u); exit 7"},
		Env:        []string{"PATH=/bin", "GREETING=from-image"},
		WorkingDir: "/srv",
		User:       "user",
	}
	img, err = mutate.ConfigFile(img, cf)
	ts.Check(err)
	p, err := layout.Write(ts.MkAbs(args[0]), empty.Index)
	ts.Check(err)
	ts.Check(p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": args[1]})))
}
