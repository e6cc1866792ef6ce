package testutil

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestExt4FromDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "hostname"), []byte("inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := Ext4FromDir(t, dir, 8)
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 8<<20 {
		t.Errorf("image size %d, want %d", fi.Size(), 8<<20)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if m := binary.LittleEndian.Uint16(b[1024+0x38:]); m != 0xef53 {
		t.Errorf("superblock magic %#x, want 0xef53", m)
	}
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		debugfs = "/usr/sbin/debugfs"
	}
	out, err := exec.Command(debugfs, "-R", "cat /etc/hostname", img).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	if string(out) != "inside\n" {
		t.Errorf("/etc/hostname in the image: %q", out)
	}
}
