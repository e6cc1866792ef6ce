package shim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// A pod through containerd's CRI plugin, as the kubelet drives it: the pod
// sandbox (its pause container, here the test program sleeping) runs in a
// kindling microVM with runtime handler "kindling"; a container of the pod
// is refused with the reason (not supported yet); stopping and removing
// the pod leave nothing. The pod uses the host's network (pod networking
// into the VM is not done yet).
func TestCRIPodSandbox(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	dir := testutil.ShortTempDir(t)
	cniDir := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := startContainerdWith(t, fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "kindling"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kindling]
      runtime_type = "io.containerd.kindling.v2"
`, pauseImage, cniDir, cniDir))
	// CRI's images live in containerd namespace k8s.io.
	img := testImageTar(t, e.dir)
	if out, serr, err := e.ctrIn("k8s.io", "image", "import", img); err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, serr)
	}

	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "pod1", Namespace: "default", Uid: "uid-pod1"},
		Hostname:     "pod1",
		LogDirectory: filepath.Join(e.dir, "logs"),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	run, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, e.shimLogs())
	}
	podID := run.PodSandboxId
	st, err := rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Status.RuntimeHandler != "kindling" {
		t.Errorf("pod status = %v, handler %q; want ready, kindling", st.Status.State, st.Status.RuntimeHandler)
	}
	// The pause container runs in a VM of the shim's.
	if n := len(e.sandboxPIDs()); n != 1 {
		t.Errorf("VMMs running for the pod: %d, want 1\n%s", n, e.shimLogs())
	}

	// A container of the pod: refused with the reason, for now.
	cc, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: testImage},
			Command:  []string{"/bin/app", "sleep", "1h"},
			LogPath:  "app.log",
		}})
	if err == nil {
		_, err = rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId})
	}
	if err == nil || !strings.Contains(err.Error(), "not supported yet") {
		t.Errorf("a second container in the pod: err %v, want refused as not supported yet", err)
	}
	if cc != nil {
		if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cc.ContainerId}); err != nil {
			t.Errorf("RemoveContainer: %v", err)
		}
	}

	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v\n%s", err, e.shimLogs())
	}
	st, err = rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("pod after stop: %v, %v; want not ready", st.GetStatus().GetState(), err)
	}
	if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	list, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("pods left: %v, %v", list.GetItems(), err)
	}
	conn.Close()
	e.stop()
	auditLeaks(t, e, podID)
}
