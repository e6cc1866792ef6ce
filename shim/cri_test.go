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
// kindling microVM with runtime handler "kindling"; the pod's containers
// run in the same VM (CreateContainer, StartContainer, ContainerStatus,
// the CRI log file, ExecSync, StopContainer, RemoveContainer); stopping and
// removing the pod leave nothing; ContainerStats has the guest's figures,
// UpdateContainerResources is refused with the reason. The pod uses the host's network (pod
// networking into the VM is not done yet).
// criConfig is containerd's configuration of the CRI plugin with kindling
// the default runtime, and an empty CNI configuration directory of its own.
func criConfig(t *testing.T) string {
	t.Helper()
	cniDir := filepath.Join(testutil.ShortTempDir(t), "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
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
`, pauseImage, cniDir, cniDir)
}

// criRuntime imports the test image where CRI's images live (containerd
// namespace k8s.io) and returns a CRI runtime client of e's containerd,
// closed when the test ends.
func criRuntime(t *testing.T, e *env) runtimeapi.RuntimeServiceClient {
	t.Helper()
	if out, serr, err := e.ctrIn("k8s.io", "image", "import", testImageTar(t, e.dir)); err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, serr)
	}
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

// runNodePod runs pod name on the node's network, its logs under e's
// directory, and returns its ID and configuration.
func runNodePod(ctx context.Context, t *testing.T, e *env, rs runtimeapi.RuntimeServiceClient, name string) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		Hostname:     name,
		LogDirectory: filepath.Join(e.dir, "logs"),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	run, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, e.shimLogs())
	}
	return run.PodSandboxId, cfg
}

func TestCRIPodSandbox(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerdWith(t, criConfig(t))
	rs := criRuntime(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	podID, podCfg := runNodePod(ctx, t, e, rs, "pod1")
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

	// Containers of the pod run in the pod's VM.
	ctrCfg := func(name string, cmd ...string) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: testImage},
			Command:  cmd,
			Envs:     []*runtimeapi.KeyValue{{Key: "FOO", Value: []byte("from-cri")}},
			LogPath:  name + ".log",
		}
	}
	create := func(cfg *runtimeapi.ContainerConfig) string {
		t.Helper()
		cc, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: podCfg, Config: cfg})
		if err != nil {
			t.Fatalf("CreateContainer %s: %v\n%s", cfg.Metadata.Name, err, e.shimLogs())
		}
		if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId}); err != nil {
			t.Fatalf("StartContainer %s: %v\n%s", cfg.Metadata.Name, err, e.shimLogs())
		}
		return cc.ContainerId
	}
	// One that logs and exits: its status and its log.
	logger := create(ctrCfg("logger", "/bin/app", "echo", "logged line"))
	deadline := time.Now().Add(30 * time.Second)
	var cs *runtimeapi.ContainerStatus
	for {
		st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: logger})
		if err != nil {
			t.Fatal(err)
		}
		if cs = st.Status; cs.State == runtimeapi.ContainerState_CONTAINER_EXITED || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cs.State != runtimeapi.ContainerState_CONTAINER_EXITED || cs.ExitCode != 0 {
		t.Errorf("logger status %v exit %d, want exited 0", cs.State, cs.ExitCode)
	}
	if b, err := os.ReadFile(filepath.Join(podCfg.LogDirectory, "logger.log")); err != nil || !strings.Contains(string(b), "stdout F logged line") {
		t.Errorf("logger's log = %q, %v; want the CRI log line of its output", b, err)
	}
	// One that runs: ExecSync into it, then stop it.
	sleeper := create(ctrCfg("sleeper", "/bin/app", "sleep", "1h"))
	cst, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: sleeper})
	if err != nil || cst.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("sleeper status %v, %v; want running", cst.GetStatus().GetState(), err)
	}
	ex, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"/bin/app", "whoami"}, Timeout: 30})
	if err != nil {
		t.Fatalf("ExecSync: %v\n%s", err, e.shimLogs())
	}
	if out := string(ex.Stdout); ex.ExitCode != 0 || !strings.Contains(out, "guest-root-visible=false") || !strings.Contains(out, "env-FOO=from-cri") || strings.Contains(out, "pid=1 ") {
		t.Errorf("ExecSync whoami = %q (exit %d), want a process in the container (not its PID 1) with its env", out, ex.ExitCode)
	}
	ex, err = rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"/bin/app", "exit", "4"}, Timeout: 30})
	if err != nil || ex.ExitCode != 4 {
		t.Errorf("ExecSync exit 4 = %v, %v; want exit code 4", ex.GetExitCode(), err)
	}
	if n := len(e.sandboxPIDs()); n != 1 {
		t.Errorf("VMMs running for the pod with its containers: %d, want 1", n)
	}
	// The container's figures, from the guest.
	stats, err := rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: sleeper})
	if err != nil {
		t.Errorf("ContainerStats: %v", err)
	} else if m := stats.Stats.GetMemory(); m.GetWorkingSetBytes().GetValue() == 0 || stats.Stats.GetCpu() == nil || m.GetAvailableBytes().GetValue() == 0 {
		t.Errorf("ContainerStats = %v, want CPU figures and the memory in use and available", stats.Stats)
	}
	// Resources cannot change under a running VM: refused with the reason.
	_, err = rs.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: sleeper,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20}})
	if err == nil || !strings.Contains(err.Error(), "fixed at boot") {
		t.Errorf("UpdateContainerResources: %v, want it refused (a VM's size is fixed at boot)", err)
	}
	if _, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: sleeper, Timeout: 1}); err != nil {
		t.Fatalf("StopContainer: %v\n%s", err, e.shimLogs())
	}
	cst, err = rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: sleeper})
	// StopContainer sends SIGTERM first. The test program is a Go program
	// and its namespace's PID 1: Go's runtime catches the signal, finds
	// the default action ignored for an init, and exits 2.
	if err != nil || cst.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || cst.Status.ExitCode != 2 {
		t.Errorf("sleeper after stop: %v exit %d, %v; want exited 2 (SIGTERM reached it)", cst.GetStatus().GetState(), cst.GetStatus().GetExitCode(), err)
	}
	for _, id := range []string{logger, sleeper} {
		if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
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
	e.stop()
	auditLeaksNS(t, e, "k8s.io", podID)
}

// containerd restarted under a running pod: the pod and its container
// are still ready and running, ExecSync reaches the container through the
// same shim and VM, the container's figures come back, and the pod is
// stopped and removed as usual.
func TestCRIRestart(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := c.podConfig("restartpod", true)
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	id := c.startContainer(ctx, run.PodSandboxId, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Command:  []string{"/bin/app", "sleep", "1h"},
	})
	vmms := c.sandboxPIDs()
	c.stop()
	c.start()
	c.waitCRI()
	if got := c.sandboxPIDs(); len(got) != 1 || len(vmms) != 1 || got[0] != vmms[0] {
		t.Errorf("VMMs after the restart %v, before %v; want the same one", got, vmms)
	}
	st, err := c.rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: run.PodSandboxId})
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod after the restart: %v, %v; want ready", st.GetStatus().GetState(), err)
	}
	cs, err := c.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container after the restart: %v, %v; want running", cs.GetStatus().GetState(), err)
	}
	ex, err := c.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"/bin/app", "echo", "after restart"}, Timeout: 30})
	if err != nil || string(ex.Stdout) != "after restart\n" {
		t.Errorf("ExecSync after the restart: %q, %v\n%s", ex.GetStdout(), err, c.shimLogs())
	}
	if _, err := c.rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id}); err != nil {
		t.Errorf("ContainerStats after the restart: %v", err)
	}
	c.removePod(ctx, run.PodSandboxId)
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", run.PodSandboxId)
}
