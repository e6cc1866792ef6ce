package shim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// envCycles sets how many pods TestCRIPodCycles runs (default 100, 5
// with -short).
const envCycles = "KINDLING_SHIM_CYCLES"

// The leak audit of the issue: pods on a CNI network created and deleted
// through CRI, each with its VM, a container (its root a hot-plugged
// drive) and an exec; then no VMM, monitor, shim, namespace, tap, mount,
// loop device, container root file, drive slot, IP lease, socket or state
// file is left, and the test process holds no more than before.
func TestCRIPodCycles(t *testing.T) {
	needs(t)
	n := 100
	if testing.Short() {
		n = 5
	}
	if v := os.Getenv(envCycles); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of cycles", envCycles, v)
		}
	}
	testutil.CheckLeaks(t)
	c := startCRI(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*30*time.Second+time.Minute)
	defer cancel()

	nsGlob := filepath.Join(c.dir, "state", "*", "netns", "*")
	leaseGlob := filepath.Join(c.ipam, "*", testSubnet+".*")
	var pods []string
	roots := fileIDs{} // the containers' root drives, by inode
	rootGlob := filepath.Join(c.shimRoot, ".shim", "ctd-*", "join-*.ext4")
	start := time.Now()
	for i := range n {
		pod := c.podConfig(fmt.Sprintf("cycle%d", i), false)
		run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
		if err != nil {
			t.Fatalf("cycle %d: RunPodSandbox: %v\n%s", i, err, c.shimLogs())
		}
		pods = append(pods, run.PodSandboxId)
		id := c.startContainer(ctx, run.PodSandboxId, pod, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Command:  []string{"/bin/app", "sleep", "1h"},
		})
		ex, err := c.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"/bin/app", "echo", "cycle"}, Timeout: 30})
		if err != nil || string(ex.Stdout) != "cycle\n" {
			t.Fatalf("cycle %d: ExecSync: %q, %v\n%s", i, ex.GetStdout(), err, c.shimLogs())
		}
		if got := len(c.sandboxPIDs()); got != 1 {
			t.Fatalf("cycle %d: %d VMMs running, want the pod's one", i, got)
		}
		// The container's root is a drive of the pod's VM.
		files, _ := filepath.Glob(rootGlob)
		if len(files) != 1 {
			t.Fatalf("cycle %d: container root files %v, want the container's", i, files)
		}
		roots.add(files...)
		// What the audit below looks for is where it looks.
		if i == 0 {
			if held := roots.heldByLoops(); len(held) != 1 {
				t.Fatalf("loop devices on the container's root drive: %v, want the guest's one", held)
			}
			if ns, _ := filepath.Glob(nsGlob); len(ns) != 1 {
				t.Fatalf("pod network namespaces at %s: %v, want the pod's", nsGlob, ns)
			}
			if l, _ := filepath.Glob(leaseGlob); len(l) != 1 {
				t.Fatalf("IP leases at %s: %v, want the pod's", leaseGlob, l)
			}
		}
		c.removePod(ctx, run.PodSandboxId)
	}
	t.Logf("%d pod cycles (simulated guest) in %v, %v each", n, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(n)).Round(time.Millisecond))
	list, err := c.rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("pods still listed: %v, %v", list.GetItems(), err)
	}
	ctrs, err := c.rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil || len(ctrs.Containers) != 0 {
		t.Errorf("containers still listed: %v, %v", ctrs.GetContainers(), err)
	}
	// The pods' network namespaces, under containerd's state directory.
	nsFiles, _ := filepath.Glob(nsGlob)
	if len(nsFiles) != 0 {
		t.Errorf("network namespaces left: %v", nsFiles)
	}
	// host-local's leases: only its bookkeeping files may stay.
	leases, _ := filepath.Glob(leaseGlob)
	if len(leases) != 0 {
		t.Errorf("IP leases left: %v", leases)
	}
	// Nothing of the shims' VMs in the state root but the shared base image.
	ents, _ := os.ReadDir(filepath.Join(c.shimRoot, ".shim"))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "base-") {
			t.Errorf("shim file left: %s", e.Name())
		}
	}
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", pods...)
	// No loop device of the guests' is left on a container's root drive.
	if held := roots.heldByLoops(); len(held) != 0 {
		t.Errorf("loop devices left on the containers' removed root files: %v", held)
	}
}
