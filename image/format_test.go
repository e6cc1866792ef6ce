package image

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed (a format change bumps Version; run with -update if meant):\ngot:\n%s\nwant:\n%s", p, got, want)
	}
}

// TestRecordFormat pins image.json, the store's record.
func TestRecordFormat(t *testing.T) {
	im := Image{
		ID:       "sha256:" + string(bytes.Repeat([]byte("ab"), 32)),
		Digest:   "sha256:" + string(bytes.Repeat([]byte("cd"), 32)),
		Refs:     []string{"index.docker.io/library/alpine:3.20"},
		Platform: Platform,
		Created:  time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		Imported: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Source:   "alpine.tar",
		Layers:   2,
		Size:     7 << 20,
		Config:   Config{Env: []string{"PATH=/bin"}, WorkingDir: "/", User: "root", Entrypoint: []string{}, Cmd: []string{"/bin/sh"}},
		RootFS: []RootFS{
			{File: "rootfs.ext4", Path: "/dropped/rootfs.ext4", Size: 268435456},
			{Agent: string(bytes.Repeat([]byte("ef"), 32)), File: rootfsFile(string(bytes.Repeat([]byte("ef"), 32))), Size: 268435456},
		},
	}
	b, err := encodeRecord(im)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "record.golden", b)
}

// TestGuestConfigFormat pins /.kindling/image.json, read by the agent.
func TestGuestConfigFormat(t *testing.T) {
	cf := &v1.ConfigFile{Config: v1.Config{Env: []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "NOVALUE", "=x", "EMPTY="}, WorkingDir: "/app", User: "1000:1000", Cmd: []string{"serve", "--port", "80"}}}
	b, err := encodeGuestConfig(configOf(cf))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "guest-config.golden", b)
}
