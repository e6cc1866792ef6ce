package shim_test

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// A pod's resources reach its VM's size: containerd (Debian's 1.6.20 and
// 1.7) puts the pod's totals (PodSandboxConfig.Linux.Resources, which the
// kubelet fills from the pod's containers) on the sandbox's spec as
// annotations, and the VM gets ⌈quota/period⌉ + 1 vCPUs and the memory
// limit + 256 MiB.
func TestCRIPodResources(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := c.podConfig("sized", true)
	pod.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 150000, MemoryLimitInBytes: 768 << 20}
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	rt, err := sandbox.Open(c.shimRoot)
	if err != nil {
		t.Fatal(err)
	}
	list, err := rt.List(ctx, sandbox.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("sandboxes: %v, %v; want the pod's", list, err)
	}
	vcpus, mem := list[0].Spec.VCPUs, list[0].Spec.MemoryMiB
	if vcpus != 3 || mem != 1024 {
		t.Errorf("the pod's VM: %d vCPUs, %d MiB; want 3 (1.5 CPUs rounded up, plus 1) and 1024 (768 MiB plus 256)", vcpus, mem)
	}
	c.removePod(ctx, run.PodSandboxId)
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", run.PodSandboxId)
}
