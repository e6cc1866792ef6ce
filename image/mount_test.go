package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRootFSMounts mounts a built root filesystem with the host kernel
// (read-only, on a loop device) and checks it as a guest would see it:
// the kernel accepts the feature set, and owners, modes, devices, links
// and the agent are there.
func TestRootFSMounts(t *testing.T) {
	needBuild(t)
	im := mustImport(t, openStore(t), writeDockerTarball(t, kindsImage(t), "kinds:1"), ImportOptions{BuildOptions: BuildOptions{Agent: fakeAgent(t, "m")}})
	mnt := t.TempDir()
	// -o loop detaches the loop device on unmount (autoclear).
	if out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,ro", im.RootFS[0].Path, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	tests := []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
	}{
		{"bin/tool", 0o755 | os.ModeSetuid, 0, 0},
		{"bin/gtool", 0o711 | os.ModeSetgid, 0, 42},
		{"home/user", 0o700 | os.ModeDir, 1000, 1000},
		{"tmp", 0o777 | os.ModeDir | os.ModeSticky, 0, 0},
		{"dev/null", 0o666 | os.ModeDevice | os.ModeCharDevice, 0, 0},
		{"dev/fifo", 0o644 | os.ModeNamedPipe, 0, 0},
		{"abs", 0o777 | os.ModeSymlink, 0, 0},
		{".kindling/kindling-agent", 0o755, 0, 0},
	}
	for _, tt := range tests {
		fi, err := os.Lstat(filepath.Join(mnt, tt.path))
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != tt.mode || st.Uid != tt.uid || st.Gid != tt.gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", tt.path, fi.Mode(), st.Uid, st.Gid, tt.mode, tt.uid, tt.gid)
		}
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/passwd")); err != nil || string(b) != "root:x:0:0:upper\n" {
		t.Errorf("etc/passwd = %q, %v", b, err)
	}
	a, _ := os.Stat(filepath.Join(mnt, "data/a"))
	c, _ := os.Stat(filepath.Join(mnt, "data/c"))
	if a == nil || c == nil || !os.SameFile(a, c) {
		t.Error("data/a and data/c are not one file")
	}
	if _, err := os.Lstat(filepath.Join(mnt, "etc/gone")); !os.IsNotExist(err) {
		t.Errorf("etc/gone: %v, want gone", err)
	}
}
