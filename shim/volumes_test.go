package shim_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// Volumes through CRI: a read-only directory (a configmap's shape, with
// its ..data link) and a host file are copied into the pod's VM and
// bind-mounted; an emptyDir is one directory of the VM shared by the
// pod's containers; a read-only mount cannot be written; a read-write
// host directory is refused at CreateContainer with the reason; CRI's
// /etc/hosts reaches the container.
func TestCRIVolumes(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	conf := filepath.Join(c.dir, "configmap")
	data := filepath.Join(conf, "..2026_12_01")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "greeting"), []byte("hello from a configmap"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"..data": "..2026_12_01", "greeting": "..data/greeting"} {
		if err := os.Symlink(target, filepath.Join(conf, link)); err != nil {
			t.Fatal(err)
		}
	}
	hostFile := filepath.Join(c.dir, "token")
	if err := os.WriteFile(hostFile, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyDir := filepath.Join(c.dir, "pods/uid-volpod/volumes/kubernetes.io~empty-dir/cache")
	big := filepath.Join(c.dir, "big")
	for _, d := range []string{emptyDir, big} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	chunk := make([]byte, 256<<10)
	for i := range 64 {
		if err := os.WriteFile(filepath.Join(big, "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), chunk, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	pod := c.podConfig("volpod", true)
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	podID := run.PodSandboxId
	mounts := []*runtimeapi.Mount{
		{ContainerPath: "/etc/config", HostPath: conf, Readonly: true},
		{ContainerPath: "/var/run/token", HostPath: hostFile},
		{ContainerPath: "/cache", HostPath: emptyDir},
	}
	start := time.Now()
	writer := c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "writer"},
		Command:  []string{"/bin/app", "sleep", "1h"}, Mounts: mounts,
	})
	small := time.Since(start)
	reader := c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "reader"},
		Command:  []string{"/bin/app", "sleep", "1h"}, Mounts: mounts[2:],
	})
	exec := func(id string, cmd ...string) (string, int32) {
		t.Helper()
		ex, err := c.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: append([]string{"/bin/app"}, cmd...), Timeout: 30})
		if err != nil {
			t.Fatalf("ExecSync %v: %v\n%s", cmd, err, c.shimLogs())
		}
		return string(ex.Stdout) + string(ex.Stderr), ex.ExitCode
	}
	for _, tt := range []struct{ id, file, want string }{
		{writer, "/etc/config/greeting", "hello from a configmap"},
		{writer, "/var/run/token", "s3cret"},
		{writer, "/etc/hosts", "localhost"},
	} {
		if out, code := exec(tt.id, "read", tt.file); code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("read %s = %q (exit %d), want %q", tt.file, out, code, tt.want)
		}
	}
	if out, code := exec(writer, "write", "/etc/config/new", "x"); code == 0 || !strings.Contains(out, "read-only file system") {
		t.Errorf("write into the read-only mount: %q (exit %d), want a read-only file system error", out, code)
	}
	if out, code := exec(writer, "write", "/cache/shared", "from the writer"); code != 0 {
		t.Fatalf("write into the emptyDir: %q (exit %d)", out, code)
	}
	if out, code := exec(reader, "read", "/cache/shared"); code != 0 || out != "from the writer" {
		t.Errorf("the other container reads the emptyDir: %q (exit %d), want the writer's file", out, code)
	}
	if _, err := os.Stat(filepath.Join(emptyDir, "shared")); err == nil {
		t.Error("a write to the emptyDir reached the host: it should stay in the VM")
	}

	// A read-write host directory is refused, naming the mount and the
	// fix (containerd creates the task, and so asks the shim, at
	// StartContainer).
	cc, err := c.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: pod, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "rwdir"}, Image: &runtimeapi.ImageSpec{Image: testImage},
		Command: []string{"/bin/app"}, Mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: big}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId})
	if err == nil || !strings.Contains(err.Error(), "bind mount /data: read-write host directory "+big) || !strings.Contains(err.Error(), "mount it read-only") {
		t.Errorf("StartContainer with a read-write host directory: %v, want it refused with the reason", err)
	}
	if _, err := c.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		t.Errorf("RemoveContainer of the refused container: %v", err)
	}

	// What a copy costs (simulated guest; the rootfs copy included).
	start = time.Now()
	bigCtr := c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "big"},
		Command:  []string{"/bin/app", "sleep", "1h"}, Mounts: []*runtimeapi.Mount{{ContainerPath: "/big", HostPath: big, Readonly: true}},
	})
	t.Logf("create+start of a container (simulated guest): with small volumes %v; with a 16 MiB, 64-file read-only volume %v", small, time.Since(start))
	if out, code := exec(bigCtr, "read", "/big/fzb"); code != 0 || len(out) != len(chunk) {
		t.Errorf("read a file of the big volume: %d bytes (exit %d), want %d", len(out), code, len(chunk))
	}

	c.removePod(ctx, podID)
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", podID)
}
