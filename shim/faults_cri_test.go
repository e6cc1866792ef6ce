package shim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// Faults under pods on the CNI network: a VMM killed under a running pod
// ends its containers with status 255 and leaves the pod not ready; a
// shim killed under a running pod makes containerd run the shim's delete
// action, which ends the VM and takes the tap out of the pod's namespace.
// Both pods are then removed through CRI, and nothing is left.
func TestCRIPodFaults(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := func(name string) (podID, ctrID string) {
		t.Helper()
		pod := c.podConfig(name, false)
		run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
		if err != nil {
			t.Fatalf("RunPodSandbox %s: %v\n%s", name, err, c.shimLogs())
		}
		id := c.startContainer(ctx, run.PodSandboxId, pod, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Command:  []string{"/bin/app", "sleep", "1h"},
		})
		return run.PodSandboxId, id
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 30s\n%s", what, c.shimLogs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// The VMM dies.
	pod1, ctr1 := start("vmmdies")
	vmms := c.sandboxPIDs()
	if len(vmms) != 1 {
		t.Fatalf("VMMs: %v, want the pod's", vmms)
	}
	if err := syscall.Kill(vmms[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("the container exited", func() bool {
		st, err := c.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr1})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	st, _ := c.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr1})
	if st.GetStatus().GetExitCode() != 255 {
		t.Errorf("container exit code after its VMM was killed: %d, want 255", st.GetStatus().GetExitCode())
	}
	waitFor("the pod not ready", func() bool {
		ps, err := c.rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod1})
		return err == nil && ps.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
	c.removePod(ctx, pod1)
	waitFor("the pod's shim exited", func() bool { return len(c.shimPIDs()) == 0 })

	// The shim dies.
	pod2, ctr2 := start("shimdies")
	netns, _ := filepath.Glob(filepath.Join(c.dir, "state", "*", "netns", "*"))
	if len(netns) != 1 {
		t.Fatalf("pod network namespaces: %v, want the pod's", netns)
	}
	if !linkIn(t, netns[0], "kdtap0") {
		t.Fatal("no kdtap0 in the running pod's namespace")
	}
	shims := c.shimPIDs()
	if len(shims) != 1 {
		for _, p := range shims {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Logf("shim %d: %q", p, b)
		}
		t.Fatalf("shim processes: %v, want the pod's one", shims)
	}
	if err := syscall.Kill(shims[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("the VMM ended", func() bool { return len(c.sandboxPIDs()) == 0 })
	waitFor("the tap taken out of the pod's namespace", func() bool { return !linkIn(t, netns[0], "kdtap0") })
	// containerd learns that the container ended too (its exit comes from
	// containerd's own cleanup of the dead shim).
	waitFor("the container exited", func() bool {
		st, err := c.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr2})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	c.removePod(ctx, pod2)
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", pod1, pod2)
}

// linkIn says whether namespace ns has a link called name.
func linkIn(t *testing.T, ns, name string) bool {
	t.Helper()
	_, err := netlinkIn(t, ns).LinkByName(name)
	return err == nil
}
