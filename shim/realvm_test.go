package shim_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// The simulated-guest CRI scenarios on real VMs: a pod on the CNI network
// boots a Linux guest, a server in a container of the pod answers at the
// pod IP from the node's side of the bridge and at 127.0.0.1 of the pod's
// network namespace (CRI's port forward), a read-only volume and
// ExecSync work in the guest, ContainerStats has figures, and removing the
// pod leaves nothing. It needs KINDLING_KERNEL, KINDLING_FIRECRACKER and
// /dev/kvm, and a machine on which that kernel boots.
func TestCRIRealVM(t *testing.T) {
	needRealVM(t)
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRIOn(t, true, true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conf := filepath.Join(c.dir, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "greeting"), []byte("hello from a volume"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := c.podConfig("realpod", false)
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	st, err := c.rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: run.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	podIP := st.GetStatus().GetNetwork().GetIp()
	srv := c.startContainer(ctx, run.PodSandboxId, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "srv"},
		Command:  []string{"/bin/app", "serve", ":8080", "hello from a real pod"},
		Mounts:   []*runtimeapi.Mount{{ContainerPath: "/etc/conf", HostPath: conf, Readonly: true}},
	})
	ex, err := c.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: srv, Cmd: []string{"/bin/app", "read", "/etc/conf/greeting"}, Timeout: 30})
	if err != nil || string(ex.Stdout) != "hello from a volume" {
		t.Errorf("read the volume: %q, %v", ex.GetStdout(), err)
	}
	var got string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = fetchIn(netnsOf(c.cmd.Process.Pid), podIP+":8080")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || got != "hello from a real pod" {
		t.Errorf("fetch %s:8080 from the node = %q, %v; want the pod's server\n%s", podIP, got, err, c.shimLogs())
	}
	// CRI's PortForward path: localhost:8080 in the pod's namespace.
	if vmms := c.sandboxPIDs(); len(vmms) != 1 {
		t.Errorf("VMMs of the pod: %v, want 1", vmms)
	} else if got, err := fetchIn(netnsOf(vmms[0]), "127.0.0.1:8080"); err != nil || got != "hello from a real pod" {
		t.Errorf("fetch 127.0.0.1:8080 in the pod's namespace (port forward) = %q, %v\n%s", got, err, c.shimLogs())
	}
	stats, err := c.rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: srv})
	if err != nil || stats.Stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 {
		t.Errorf("ContainerStats: %v, %v; want the server's memory", stats.GetStats(), err)
	}
	c.removePod(ctx, run.PodSandboxId)
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", run.PodSandboxId)
}
