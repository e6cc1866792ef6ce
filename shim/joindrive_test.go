package shim_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// A pod's joining containers get their roots as hot-plugged drives: two
// containers of different images each see their own root (the second
// image's file only in the second, a file one writes not in the other); a
// removed container's slot and ext4 go, and a new container takes the
// slot with a fresh root; the pool's 8 slots fill up and the next
// container is refused with the reason; removing the pod leaves nothing.
// On the simulated guest, whose drives change after boot as a real
// guest's do (the fake rebinds /dev/vdX).
func TestCRIJoinedDrives(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pod := c.podConfig("drivepod", true)
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	podID := run.PodSandboxId
	start := func(name, image string) string {
		t.Helper()
		return c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Command:  []string{"/bin/app", "sleep", "1h"},
		})
	}
	exec := func(id string, cmd ...string) (string, int32) {
		t.Helper()
		ex, err := c.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: append([]string{"/bin/app"}, cmd...), Timeout: 30})
		if err != nil {
			t.Fatalf("ExecSync %v in %s: %v\n%s", cmd, id, err, c.shimLogs())
		}
		return string(ex.Stdout) + string(ex.Stderr), ex.ExitCode
	}
	remove := func(id string) {
		t.Helper()
		if _, err := c.rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
			t.Fatalf("StopContainer: %v\n%s", err, c.shimLogs())
		}
		if _, err := c.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer: %v\n%s", err, c.shimLogs())
		}
	}
	ext4s := func() []string {
		m, _ := filepath.Glob(filepath.Join(c.shimRoot, ".shim", "ctd-*", "join-*.ext4"))
		return m
	}
	checkRoot := func(id, wantImage string) {
		t.Helper()
		out, code := exec(id, "read", "/etc/image")
		if wantImage == "" && (code != 1 || !strings.Contains(out, "no such file")) {
			t.Errorf("%s: /etc/image: %q (exit %d), want none: its root is the first image's", id, out, code)
		}
		if wantImage != "" && (code != 0 || out != wantImage) {
			t.Errorf("%s: /etc/image: %q (exit %d), want %q: its root is the second image's", id, out, code, wantImage)
		}
	}

	a := start("a", testImage)
	b := start("b", testImage2)
	checkRoot(a, "")
	checkRoot(b, image2Marker)
	if out, code := exec(a, "write", "/tmp/mine", "written by a"); code != 0 {
		t.Fatalf("write in a: %q exit %d", out, code)
	}
	if out, _ := exec(a, "read", "/tmp/mine"); out != "written by a" {
		t.Errorf("a reads its own file: %q", out)
	}
	if out, code := exec(b, "read", "/tmp/mine"); code != 1 {
		t.Errorf("b reads a's file: %q (exit %d), want none: its own root", out, code)
	}
	if got := ext4s(); len(got) != 2 {
		t.Errorf("containers' ext4 files with a and b: %v, want 2", got)
	}
	// The guest's loop devices (made by the container's init on the
	// simulated guest's /dev/vdX) hold the two files: the audit sees them.
	roots := fileIDs{}
	roots.add(ext4s()...)
	if held := roots.heldByLoops(); len(held) != 2 {
		t.Errorf("loop devices on the containers' ext4 files: %v, want 2 (a's and b's)", held)
	}

	// A removed container's slot and file go; a new one takes the slot.
	remove(a)
	if got := ext4s(); len(got) != 1 {
		t.Errorf("containers' ext4 files after a's removal: %v, want b's only", got)
	}
	cID := start("c", testImage)
	roots.add(ext4s()...)
	checkRoot(cID, "")
	if out, code := exec(cID, "read", "/tmp/mine"); code != 1 {
		t.Errorf("c reads the file a wrote in the slot's former drive: %q (exit %d), want a fresh root", out, code)
	}
	checkRoot(b, image2Marker)

	// b and c hold 2 of the 8 slots: 6 more fit (the VMM's pool has them
	// free again, a's included), the next is refused with the reason.
	var more []string
	for i := range 6 {
		more = append(more, start(string(rune('d'+i)), testImage2))
	}
	checkRoot(more[5], image2Marker)
	roots.add(ext4s()...)
	cc, err := c.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: pod, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "toomany"}, Image: &runtimeapi.ImageSpec{Image: testImage},
		Command: []string{"/bin/app", "sleep", "1h"}, LogPath: "toomany.log"}})
	if err != nil {
		t.Fatalf("CreateContainer toomany: %v", err)
	}
	_, err = c.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId})
	if err == nil || !strings.Contains(err.Error(), "all 8 drive slots hold containers' roots") || !strings.Contains(err.Error(), "remove an exited container") {
		t.Errorf("a ninth container: %v, want it refused: every drive slot taken", err)
	}
	if _, err := c.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		t.Errorf("RemoveContainer of the refused one: %v", err)
	}
	if got := ext4s(); len(got) != 8 {
		t.Errorf("containers' ext4 files with 8 containers: %d, want 8 (none for the refused one)", len(got))
	}
	for _, id := range more[:3] {
		remove(id)
	}
	if got := ext4s(); len(got) != 5 {
		t.Errorf("containers' ext4 files after three removals: %d, want 5", len(got))
	}
	// The rest go with the pod.
	c.removePod(ctx, podID)
	if got := ext4s(); len(got) != 0 {
		t.Errorf("containers' ext4 files after the pod: %v", got)
	}
	if n := len(c.sandboxPIDs()); n != 0 {
		t.Errorf("VMMs left: %d", n)
	}
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", podID)
	if held := roots.heldByLoops(); len(held) != 0 {
		t.Errorf("loop devices still on the containers' removed ext4 files: %v", held)
	}
}

// fileIDs are files by device and inode, which a loop device reports for
// its backing file (the guest's path of it, or a removed file's, tells
// nothing).
type fileIDs map[[2]uint64]string

func (f fileIDs) add(paths ...string) {
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			f[[2]uint64{st.Dev, st.Ino}] = p
		}
	}
}

// heldByLoops lists the bound loop devices whose backing file is one of f.
func (f fileIDs) heldByLoops() []string {
	var out []string
	bound, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, b := range bound {
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(b)))
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(fd)
		unix.Close(fd)
		if err != nil {
			continue
		}
		if p, ok := f[[2]uint64{info.Device, info.Inode}]; ok {
			out = append(out, dev+" -> "+p)
		}
	}
	return out
}
