package template

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/formats")

// formatsTemplate is a template manifest with every stored field set.
func formatsTemplate() Template {
	return Template{
		Format: Format, Name: "base", Dir: "/run/kindling/.templates/base",
		CreatedAt: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), From: "web",
		Firecracker: "1.14.2", FirecrackerPath: "/usr/bin/firecracker", FirecrackerStamp: FileStamp{Size: 1234, ModTime: 1700000000000000000},
		SnapshotFormat: "8.0.0", VCPUs: 2, MemoryMiB: 256, SMT: true,
		Drives:   []Drive{{ID: "rootfs", Path: "/run/kindling/.templates/base/drive-rootfs.img", Root: true, Copied: true}, {ID: "drive0", Path: "/d/ro.img", ReadOnly: true}},
		Net:      []Net{{IfaceID: "eth0", Tap: "kd0", MAC: "02:00:00:00:00:01", Auto: true}},
		VsockCID: 3,
		Files:    []File{{Name: "vmstate", SHA256: "ab12", Stamp: FileStamp{Size: 10, ModTime: 5}}},
		Image:    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		ImageRef: "app:1",
		Setup:    []string{"apk add python3", "echo ready > /etc/motd"},
	}
}

// TestFormatsOlder reads the golden files of the older formats: they are
// still accepted, and a format from a newer kindling is not.
func TestFormatsOlder(t *testing.T) {
	for v := 1; v < Format; v++ {
		b, err := os.ReadFile(filepath.Join("testdata", "formats", fmt.Sprintf("template-manifest-v%d.json", v)))
		if err != nil {
			t.Fatal(err)
		}
		var tpl Template
		if err := json.Unmarshal(b, &tpl); err != nil {
			t.Fatalf("format %d: %v", v, err)
		}
		if tpl.Format != v || tpl.Name != "base" {
			t.Fatalf("format %d's golden file reads as format %d, name %q", v, tpl.Format, tpl.Name)
		}
		if err := checkFormat(tpl.Format); err != nil {
			t.Errorf("format %d: %v", v, err)
		}
	}
	for _, f := range []int{0, Format + 1} {
		if err := checkFormat(f); !errors.Is(err, ErrNotSupported) {
			t.Errorf("format %d: %v, want ErrNotSupported", f, err)
		}
	}
}

// The template manifest's golden file is named with its format version: a
// change to what is written fails the test until Format is bumped and
// -update writes the new file. Version 1's file was written by kindling
// before templates were a package of their own, and is still read.
func TestFormatsGolden(t *testing.T) {
	path := filepath.Join("testdata", "formats", fmt.Sprintf("template-manifest-v%d.json", Format))
	tpl := formatsTemplate()
	got, err := encodeManifest(&tpl)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: a new format version needs its golden file: run go test . -run TestFormatsGolden -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the template manifest format changed but its version (%d) did not: bump Format, read the old one, and run go test . -run TestFormatsGolden -update\ngot:\n%s\nwant:\n%s", Format, got, want)
	}
	var back Template
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, tpl) {
		t.Errorf("read\n%+v\nwant\n%+v", back, tpl)
	}
}
