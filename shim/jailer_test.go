package shim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// startJailedContainerd is startContainerd with the shim's VMs run under
// the fake jailer (testutil.FakeJailer) instead of KINDLING_NO_JAILER.
func startJailedContainerd(t *testing.T, cri string) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jailer needs root")
	}
	t.Setenv("KINDLING_NO_JAILER", "")
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	return startContainerdWith(t, cri)
}

// auditJail checks, after auditLeaks, that the jails of the shim's VMs
// left nothing: no chroot under /srv/jailer, no cgroup, no jail uid held,
// no drive copies.
func auditJail(t *testing.T, e *env) {
	t.Helper()
	if left := sandbox.JailLeftoversOfRoot(e.shimRoot); len(left) > 0 {
		t.Errorf("the jails left:\n%s", strings.Join(left, "\n"))
	}
}

// jailedVMMPIDs lists the running VMMs of the test's jailed sandboxes:
// the processes whose root is the chroot of one of the shim's sandboxes
// (the jailer's <base>/<exec>/<id>/root). Their command lines name no file
// of the test's directory, so sandboxPIDs does not find them.
func (e *env) jailedVMMPIDs() []int {
	ids, _ := os.ReadDir(e.shimRoot)
	var pids []int
	roots, _ := filepath.Glob("/proc/[0-9]*/root")
	for _, r := range roots {
		target, err := os.Readlink(r)
		if err != nil || !strings.HasPrefix(target, "/srv/jailer/") {
			continue
		}
		for _, id := range ids {
			if strings.HasSuffix(target, "/"+id.Name()+"/root") {
				var pid int
				fmt.Sscanf(filepath.Base(filepath.Dir(r)), "%d", &pid)
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// checkJailedVMM fails the test unless the process pid (a task's VMM, as
// `ctr task ps` shows it) runs as an unprivileged uid, with no effective
// capability, chrooted under /srv/jailer.
func checkJailedVMM(t *testing.T, pid string) {
	t.Helper()
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) != 4 || f[0] == "0" || f[1] == "0" || f[2] == "0" || f[3] == "0" {
				t.Errorf("VMM %s uids %q, want the jail's, not root", pid, strings.TrimSpace(v))
			}
		}
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok && strings.Trim(strings.TrimSpace(v), "0") != "" {
			t.Errorf("VMM %s effective capabilities %s, want none", pid, strings.TrimSpace(v))
		}
	}
	if root, err := os.Readlink("/proc/" + pid + "/root"); err != nil || !strings.HasPrefix(root, "/srv/jailer/") {
		t.Errorf("VMM %s root %q (%v), want a chroot under /srv/jailer", pid, root, err)
	}
}

// TestContainerdJailedTask: with KINDLING_JAILER (the fake jailer) and
// without KINDLING_NO_JAILER, a task runs in a jailed VM (its Firecracker
// chrooted as a uid of its own, the simulated guest booting the
// container's drive): its output, exec into it, its end, and nothing left
// of the jail.
func TestContainerdJailedTask(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startJailedContainerd(t, "")
	e.ctr("image", "import", testImageTar(t, e.dir))
	runtime := "io.containerd.kindling.v2"

	out, serr, err := e.ctrErr("run", "--rm", "--runtime", runtime, "--env", "FOO=bar", testImage, "jt1", "/bin/app", "whoami")
	if err != nil || !strings.Contains(out, "pid=1 uid=0 host=") || !strings.Contains(out, "env-FOO=bar") || !strings.Contains(out, "guest-root-visible=false") {
		t.Fatalf("jailed ctr run whoami: %v, out %q, stderr %q\nshim logs:\n%s", err, out, serr, e.shimLogs())
	}

	e.ctr("run", "-d", "--runtime", runtime, testImage, "jt2", "/bin/app", "sleep", "1h")
	out = e.ctr("task", "ps", "jt2")
	if f := strings.Fields(out); len(f) < 3 || f[0] != "PID" {
		t.Errorf("task ps = %q, want a PID table", out)
	} else {
		checkJailedVMM(t, f[2])
	}
	out = e.ctr("task", "exec", "--exec-id", "x1", "jt2", "/bin/app", "whoami")
	if !strings.Contains(out, "guest-root-visible=false") || strings.Contains(out, "pid=1 ") {
		t.Errorf("exec whoami = %q, want another pid in the container's root", out)
	}
	_, _, err = e.ctrErr("task", "exec", "--exec-id", "x2", "jt2", "/bin/app", "exit", "3")
	if code := exitCode(err); code != 3 {
		t.Errorf("exec `app exit 3` exited %d, want 3", code)
	}
	e.ctr("task", "kill", "--signal", "SIGKILL", "jt2")
	waitStatus(t, e, "jt2", "STOPPED")
	e.ctr("task", "delete", "jt2")
	e.ctr("container", "delete", "jt2")
	e.stop()
	auditLeaks(t, e, "jt1", "jt2")
	auditJail(t, e)
}

// TestCRIJailedPod: a pod through containerd's CRI plugin with its VM
// under the fake jailer: the pod's sandbox container boots the VM (its
// root filesystem the VM's second drive), a container of the pod joins it
// (its root filesystem hot-plugged into a slot of the jailed VM), ExecSync
// runs in it, and stopping and removing the pod leave nothing, of the
// jail either.
func TestCRIJailedPod(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startJailedContainerd(t, criConfig(t))
	rs := criRuntime(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	podID, podCfg := runNodePod(ctx, t, e, rs, "jpod")
	pids := e.jailedVMMPIDs()
	if len(pids) != 1 {
		t.Fatalf("VMMs running for the pod: %d, want 1\n%s", len(pids), e.shimLogs())
	}
	checkJailedVMM(t, fmt.Sprint(pids[0]))

	cc, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sleeper"},
		Image:    &runtimeapi.ImageSpec{Image: testImage},
		Command:  []string{"/bin/app", "sleep", "1h"},
		Envs:     []*runtimeapi.KeyValue{{Key: "FOO", Value: []byte("jailed")}},
		LogPath:  "sleeper.log",
	}})
	if err != nil {
		t.Fatalf("CreateContainer: %v\n%s", err, e.shimLogs())
	}
	if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v\n%s", err, e.shimLogs())
	}
	cst, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cc.ContainerId})
	if err != nil || cst.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("sleeper status %v, %v; want running", cst.GetStatus().GetState(), err)
	}
	ex, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cc.ContainerId, Cmd: []string{"/bin/app", "whoami"}, Timeout: 30})
	if err != nil {
		t.Fatalf("ExecSync: %v\n%s", err, e.shimLogs())
	}
	if out := string(ex.Stdout); ex.ExitCode != 0 || !strings.Contains(out, "guest-root-visible=false") || !strings.Contains(out, "env-FOO=jailed") || strings.Contains(out, "pid=1 ") {
		t.Errorf("ExecSync whoami = %q (exit %d), want a process in the container (not its PID 1) with its env", out, ex.ExitCode)
	}
	if n := len(e.jailedVMMPIDs()); n != 1 {
		t.Errorf("VMMs running for the pod with its container: %d, want 1", n)
	}
	if _, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cc.ContainerId, Timeout: 1}); err != nil {
		t.Fatalf("StopContainer: %v\n%s", err, e.shimLogs())
	}
	if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		t.Errorf("RemoveContainer: %v", err)
	}
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v\n%s", err, e.shimLogs())
	}
	if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	e.stop()
	auditLeaksNS(t, e, "k8s.io", podID)
	auditJail(t, e)
}
