package shim_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// The test's images: testImage runs the test program (its entrypoint
// without arguments says hello and exits), pauseImage sleeps (a pod's
// sandbox container).
const (
	testImage  = "docker.io/kindling/shim-test:1"
	pauseImage = "docker.io/kindling/shim-pause:1"
	// testImage2 is testImage with one more layer: /etc/image.
	testImage2 = "docker.io/kindling/shim-test:2"
	// image2Marker is /etc/image's content in testImage2.
	image2Marker = "the second image"
)

// env is a containerd of the test's own, with the kindling shim on its
// PATH, configured for the fake Firecracker's simulated guest.
type env struct {
	t        *testing.T
	dir      string // everything of the test
	sock     string // containerd's socket
	shimRoot string
	bin      string // the shim's directory
	cmd      *exec.Cmd
	cfgPath  string
	env      []string // containerd's
	done     chan struct{}
	log      *testutil.SyncBuffer
	ownNet   bool       // containerd runs in a new network namespace
	extra    []*os.File // containerd's descriptors from 3 up
}

// envContainerd names another containerd binary for the tests (one of
// release 1.7, built as docs/kubernetes.md says); unset, the containerd
// on PATH (Debian's 1.6).
const envContainerd = "KINDLING_CONTAINERD"

func containerdBinary() string {
	if b := os.Getenv(envContainerd); b != "" {
		return b
	}
	return "containerd"
}

// needRealVM skips a real-VM test where no Linux guest can boot.
func needRealVM(t *testing.T) {
	t.Helper()
	if os.Getenv("KINDLING_KERNEL") == "" || os.Getenv("KINDLING_FIRECRACKER") == "" {
		t.Skip("skipping real-VM test: set KINDLING_KERNEL to a Linux guest kernel (virtio-blk, virtio-net, vsock, ext4, CONFIG_IP_PNP) and KINDLING_FIRECRACKER (no Linux guest boots on the machines kindling is developed on)")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("skipping real-VM test: no /dev/kvm: %v", err)
	}
}

// needs skips the test without what a real containerd run needs.
func needs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: containerd and the simulated guest need root")
	}
	if b := os.Getenv(envContainerd); b != "" {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s=%s: %v", envContainerd, b, err)
		}
	}
	for _, b := range []string{containerdBinary(), "ctr", "mkfs.ext4"} {
		if _, err := exec.LookPath(b); err != nil {
			if _, err2 := exec.LookPath("/usr/sbin/" + b); err2 != nil {
				t.Skipf("skipping: %s not found (install containerd and e2fsprogs): %v", b, err)
			}
		}
	}
}

// goBuild builds pkg (a path relative to the module root) statically into out.
func goBuild(t *testing.T, pkg, out string) {
	t.Helper()
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := gotool.Path()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// testImageTar writes a docker-save tarball of the test's images, whose
// only file is the static test program at /bin/app (and /etc/image in
// testImage2).
func testImageTar(t *testing.T, dir string) string {
	t.Helper()
	app := filepath.Join(dir, "app")
	goBuild(t, "./shim/testdata/app", app)
	data, err := os.ReadFile(app)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "bin/app", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(data)
		}
	}
	tw.Close()
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerData)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: []string{"/bin/app"}, Env: []string{"PATH=/bin", "FOO=from-image"}, WorkingDir: "/tmp"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	// The pause image: the same program, sleeping.
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = []string{"/bin/app", "sleep", "1h"}
	pause, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	var buf2 bytes.Buffer
	tw = tar.NewWriter(&buf2)
	for _, h := range []*tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/image", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(image2Marker))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write([]byte(image2Marker))
	tw.Close()
	layer2Data := buf2.Bytes()
	layer2, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer2Data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img2, err := mutate.AppendLayers(img, layer2)
	if err != nil {
		t.Fatal(err)
	}
	refs := map[name.Reference]v1.Image{}
	for ref, im := range map[string]v1.Image{testImage: img, pauseImage: pause, testImage2: img2} {
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		refs[r] = im
	}
	p := filepath.Join(dir, "image.tar")
	if err := tarball.MultiRefWriteToFile(p, refs); err != nil {
		t.Fatal(err)
	}
	return p
}

// startContainerd runs Debian's containerd with its own root, state and
// socket under a temporary directory, the CRI plugin off.
func startContainerd(t *testing.T) *env {
	t.Helper()
	return startContainerdWith(t, "")
}

// startContainerdWith is startContainerd with extra configuration; with
// cri set, the CRI plugin is on and cri is its configuration.
func startContainerdWith(t *testing.T, cri string) *env {
	t.Helper()
	return startContainerdIn(t, cri, false, false)
}

// startContainerdIn is startContainerdWith; with ownNet, containerd (and
// so its CNI plugins, their bridge and its shims) runs in a network
// namespace of its own, which goes with it.
//
// With realVM, the shim boots real VMs: the Linux kernel of
// KINDLING_KERNEL on the Firecracker of KINDLING_FIRECRACKER (the caller
// checked them, see needRealVM); else the fake Firecracker's simulated
// guest with kindling's tiny test guest as the kernel.
func startContainerdIn(t *testing.T, cri string, ownNet, realVM bool) *env {
	t.Helper()
	e := &env{t: t, dir: testutil.ShortTempDir(t), log: &testutil.SyncBuffer{}, ownNet: ownNet}
	e.bin = filepath.Join(e.dir, "bin")
	e.shimRoot = filepath.Join(e.dir, "k")
	e.sock = filepath.Join(e.dir, "c.sock")
	if err := os.MkdirAll(e.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	goBuild(t, "./cmd/containerd-shim-kindling-v2", filepath.Join(e.bin, "containerd-shim-kindling-v2"))
	goBuild(t, "./cmd/kindling-agent", filepath.Join(e.bin, "kindling-agent"))
	var kernel, fc string
	if realVM {
		kernel, fc = os.Getenv("KINDLING_KERNEL"), os.Getenv("KINDLING_FIRECRACKER")
	} else {
		kernel = testutil.GuestKernel(t, guest.Options{Message: "kindling shim test guest", Mode: guest.Halt})
		fc = testutil.FakeFirecracker(t)
	}
	disabled := `disabled_plugins = ["io.containerd.grpc.v1.cri"]`
	if cri != "" {
		disabled = ""
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
`+disabled+`
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "debug"
`, filepath.Join(e.dir, "root"), filepath.Join(e.dir, "state"), e.sock, e.sock+".ttrpc") + cri
	cfgPath := filepath.Join(e.dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.env = append(os.Environ(),
		"PATH="+e.bin+":"+os.Getenv("PATH"),
		"KINDLING_KERNEL="+kernel,
		"KINDLING_FIRECRACKER="+fc,
		"KINDLING_SHIM_ROOT="+e.shimRoot)
	e.cfgPath = cfgPath
	t.Cleanup(e.cleanup)
	e.start()
	if out, _, err := e.ctrErr("version"); err == nil {
		// Which containerd ran (Debian's, or KINDLING_CONTAINERD's).
		if _, server, ok := strings.Cut(out, "Server:"); ok {
			t.Logf("containerd %s", strings.Join(strings.Fields(server), " "))
		}
	}
	return e
}

// start runs containerd and waits until it answers.
func (e *env) start() {
	t := e.t
	t.Helper()
	e.done = make(chan struct{})
	e.cmd = exec.Command(containerdBinary(), "--config", e.cfgPath)
	e.cmd.Env = e.env
	e.cmd.ExtraFiles = e.extra
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if e.ownNet {
		e.cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	done := e.done
	go func() { e.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(e.sock); err == nil {
			if _, _, err := e.ctrErr("version"); err == nil {
				break
			}
		}
		select {
		case <-e.done:
			t.Fatalf("containerd exited at start: %v\n%s", e.cmd.ProcessState, e.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not answering after 20s:\n%s", e.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanup removes what a failed test left: its tasks and containers, then
// containerd, then any process still running from the test's directory
// (shims, monitors, VMMs).
func (e *env) cleanup() {
	select {
	case <-e.done:
	default:
		out, _, _ := e.ctrErr("container", "ls", "-q")
		for _, id := range strings.Fields(out) {
			e.ctrErr("task", "kill", "--signal", "SIGKILL", id)
			e.ctrErr("task", "delete", "--force", id)
			e.ctrErr("container", "delete", id)
		}
	}
	e.stop()
	for _, pid := range e.processes() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// Mounts a killed containerd left (its pods' network namespaces).
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], e.dir+"/") {
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// processes lists the processes whose command line names the test's
// directory: they are the test's own.
func (e *env) processes() []int {
	var pids []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil || !bytes.Contains(b, []byte(e.dir+"/")) {
			continue
		}
		var pid int
		fmt.Sscanf(filepath.Base(filepath.Dir(c)), "%d", &pid)
		if pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stop ends containerd (SIGTERM, then SIGKILL after 10 s).
func (e *env) stop() {
	select {
	case <-e.done:
		return
	default:
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.done
	}
}

// ctrErr runs ctr against the test's containerd.
func (e *env) ctrErr(args ...string) (stdout, stderr string, err error) {
	return e.ctrIn("kindling-test", args...)
}

// ctrArgs are ctr's arguments for args in containerd namespace ns: the
// test's containerd, and the FIFOs of run and exec in the test's directory
// (ctr leaves those of a detached task behind).
func (e *env) ctrArgs(ns string, args ...string) []string {
	out := []string{"--address", e.sock, "--namespace", ns}
	switch {
	case len(args) > 0 && args[0] == "run":
		out = append(out, "run", "--fifo-dir", filepath.Join(e.dir, "fifo"))
		args = args[1:]
	case len(args) > 1 && args[0] == "task" && args[1] == "exec":
		out = append(out, "task", "exec", "--fifo-dir", filepath.Join(e.dir, "fifo"))
		args = args[2:]
	}
	return append(out, args...)
}

// ctrIn runs ctr in containerd namespace ns.
func (e *env) ctrIn(ns string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", e.ctrArgs(ns, args...)...)
	var o, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &se
	err = cmd.Run()
	return o.String(), se.String(), err
}

func (e *env) ctr(args ...string) string {
	e.t.Helper()
	out, serr, err := e.ctrErr(args...)
	if err != nil {
		e.t.Fatalf("ctr %s: %v\nstdout: %s\nstderr: %s\n%s", strings.Join(args, " "), err, out, serr, e.shimLogs())
	}
	return out
}

// shimLogs gathers what helps when a step fails: containerd's log tail
// and the sandboxes' monitor and console logs.
func (e *env) shimLogs() string {
	var b strings.Builder
	l := e.log.String()
	if len(l) > 6000 {
		l = l[len(l)-6000:]
	}
	b.WriteString("containerd log (tail):\n" + l)
	files, _ := filepath.Glob(filepath.Join(e.shimRoot, "*", "*.log"))
	for _, f := range files {
		d, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "\n== %s\n%s", f, d)
	}
	return b.String()
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// A plain task through containerd: `ctr run --runtime
// io.containerd.kindling.v2` runs the image's program in a kindling
// microVM (the fake Firecracker's simulated guest), in its own PID and
// mount namespaces on its own root, with stdout captured and the exit
// code propagated; a detached task can be exec'd into, killed and deleted;
// then nothing is left.
func TestContainerdRun(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	img := testImageTar(t, e.dir)
	e.ctr("image", "import", img)

	runtime := "io.containerd.kindling.v2"
	// Output and identity: PID 1 of its namespace, its own root (the
	// guest's /.kindling is not visible), the image's env and workdir.
	out := e.ctr("run", "--rm", "--runtime", runtime, "--env", "FOO=bar", testImage, "t1", "/bin/app", "whoami")
	want := "pid=1 uid=0 host="
	if !strings.Contains(out, want) || !strings.Contains(out, "cwd=/tmp") || !strings.Contains(out, "guest-root-visible=false") || !strings.Contains(out, "env-FOO=bar") {
		t.Errorf("whoami in the container = %q, want %q, cwd=/tmp, guest-root-visible=false, env-FOO=bar", out, want)
	}
	// The exit code is the task's.
	_, serr, err := e.ctrErr("run", "--rm", "--runtime", runtime, testImage, "t2", "/bin/app", "exit", "7")
	if code := exitCode(err); code != 7 {
		t.Errorf("ctr run of `app exit 7` exited %d (%v), want 7\n%s", code, err, serr)
	}
	// A command missing from the container's root: 127, and the reason on
	// the task's stderr.
	_, serr, err = e.ctrErr("run", "--rm", "--runtime", runtime, testImage, "t5", "/bin/nope")
	if code := exitCode(err); code != 127 || !strings.Contains(serr, "/bin/nope") {
		t.Errorf("ctr run of a missing command exited %d, stderr %q; want 127 naming /bin/nope", code, serr)
	}
	// The image's entrypoint without arguments.
	out = e.ctr("run", "--rm", "--runtime", runtime, testImage, "t3")
	if !strings.Contains(out, "hello from a kindling container") {
		t.Errorf("entrypoint output = %q", out)
	}

	// A detached task: exec, kill, delete.
	e.ctr("run", "-d", "--runtime", runtime, testImage, "t4", "/bin/app", "sleep", "1h")
	if out := e.ctr("task", "ls"); !strings.Contains(out, "t4") || !strings.Contains(out, "RUNNING") {
		t.Errorf("task ls = %q, want t4 RUNNING", out)
	}
	// Pids: the task's host process is its VMM.
	out = e.ctr("task", "ps", "t4")
	if f := strings.Fields(out); len(f) < 3 || f[0] != "PID" {
		t.Errorf("task ps = %q, want a PID table", out)
	} else if cmd, err := os.ReadFile("/proc/" + f[2] + "/cmdline"); err != nil || !strings.Contains(string(cmd), "firecracker") {
		t.Errorf("task ps = %q: PID %s is not the VMM (%q, %v)", out, f[2], cmd, err)
	}
	out = e.ctr("task", "exec", "--exec-id", "x1", "t4", "/bin/app", "whoami")
	if !strings.Contains(out, "guest-root-visible=false") || strings.Contains(out, "pid=1 ") {
		t.Errorf("exec whoami = %q, want another pid in the container's root", out)
	}
	_, _, err = e.ctrErr("task", "exec", "--exec-id", "x2", "t4", "/bin/app", "exit", "3")
	if code := exitCode(err); code != 3 {
		t.Errorf("exec `app exit 3` exited %d, want 3", code)
	}
	// Pause and resume the whole VM.
	e.ctr("task", "pause", "t4")
	waitStatus(t, e, "t4", "PAUSED")
	e.ctr("task", "resume", "t4")
	waitStatus(t, e, "t4", "RUNNING")
	// The guest's figures for the container, as cgroup v2 metrics.
	out, serr, err = e.ctrErr("task", "metrics", "t4")
	metric := func(name string) string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == name {
				return f[1]
			}
		}
		return ""
	}
	// One process (the sleeping app); its resident memory; the VM's 512 MiB.
	if err != nil || metric("pids.current") != "1" || metric("memory.usage") == "0" || metric("memory.usage") == "" || metric("memory.usage_limit") != "536870912" {
		t.Errorf("task metrics: %v, stderr %q:\n%s\nwant 1 process, some memory, a limit of 512 MiB", err, serr, out)
	}
	e.ctr("task", "kill", "--signal", "SIGKILL", "t4")
	waitStatus(t, e, "t4", "STOPPED")
	e.ctr("task", "delete", "t4")
	e.ctr("container", "delete", "t4")
	if out := e.ctr("container", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("containers left: %q", out)
	}
	e.stop()
	auditLeaks(t, e, "t1", "t2", "t3", "t4", "t5")
}

// A VMM that dies under a running task is the task's exit, with status
// 255, reported to containerd (the attached `ctr run` returns), never a
// hang; the task is then deleted and nothing is left.
func TestContainerdVMMDies(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, "ctr", e.ctrArgs("kindling-test",
		"run", "--runtime", "io.containerd.kindling.v2", testImage, "v1", "/bin/app", "sleep", "1h")...)
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- run.Wait() }()
	waitStatus(t, e, "v1", "RUNNING")
	// The task's PID is its VMM's.
	var pid int
	for _, l := range strings.Split(e.ctr("task", "ls"), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "v1" {
			fmt.Sscanf(f[1], "%d", &pid)
		}
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if pid <= 0 || !bytes.Contains(comm, []byte("fake-firecracker")) {
		t.Fatalf("task v1's pid %d is not its VMM (cmdline %q)", pid, comm)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runDone:
		if code := exitCode(err); code != 255 {
			t.Errorf("ctr run exited %d (%v) after its VMM was killed, want 255\n%s", code, err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ctr run still waiting 30s after the VMM was killed\n%s", e.shimLogs())
	}
	// ctr run deleted the task once it saw the exit.
	if out := e.ctr("task", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("tasks left after ctr run returned: %q", out)
	}
	e.ctr("container", "delete", "v1")
	e.stop()
	auditLeaks(t, e, "v1")
}

func waitStatus(t *testing.T, e *env, id, status string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, _ := e.ctrErr("task", "ls")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == id && f[2] == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s after 20s: %s\n%s", id, status, out, e.shimLogs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// auditLeaks checks that nothing of the test's tasks outlives them: no
// process running one of the test's binaries, no mount or loop device of
// the test's files, no sandbox left in the shim's state root.
func auditLeaks(t *testing.T, e *env, tasks ...string) {
	t.Helper()
	auditLeaksNS(t, e, "kindling-test", tasks...)
}

// auditLeaksNS is auditLeaks for tasks of containerd namespace ns.
func auditLeaksNS(t *testing.T, e *env, ns string, tasks ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var leaks []string
		for _, pid := range e.processes() {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			leaks = append(leaks, fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(mounts), "\n") {
			if strings.Contains(l, e.dir) {
				leaks = append(leaks, "mount "+l)
			}
		}
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, l := range loops {
			b, _ := os.ReadFile(l)
			if strings.HasPrefix(string(b), e.dir) {
				leaks = append(leaks, "loop "+l+" -> "+strings.TrimSpace(string(b)))
			}
		}
		ents, _ := os.ReadDir(e.shimRoot)
		for _, d := range ents {
			if !strings.HasPrefix(d.Name(), ".") {
				leaks = append(leaks, "sandbox "+d.Name())
			}
		}
		// The shims' sockets (containerd's shim library puts them in
		// /run/containerd/s whatever containerd's own state directory).
		for _, id := range tasks {
			h := sha256.Sum256([]byte(filepath.Join(e.sock, ns, id)))
			if p := fmt.Sprintf("/run/containerd/s/%x", h); fileExists(p) {
				leaks = append(leaks, "shim socket "+p)
			}
		}
		// ctr's FIFOs, were they made in containerd's default place.
		for _, id := range tasks {
			fifos, _ := filepath.Glob("/run/containerd/fifo/*/" + id + "-stdout")
			for _, f := range fifos {
				leaks = append(leaks, "FIFO "+f)
			}
		}
		left, _ := filepath.Glob(filepath.Join(e.shimRoot, ".shim", "ctd-*"))
		for _, l := range left {
			leaks = append(leaks, "shim files "+l)
		}
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind:\n%s", strings.Join(leaks, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// A shim killed under a running task: containerd notices, runs the shim
// binary's delete action, which ends and removes the task's VM; nothing is
// left once the container is deleted.
func TestContainerdShimKilled(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	e.ctr("run", "-d", "--runtime", "io.containerd.kindling.v2", testImage, "k1", "/bin/app", "sleep", "1h")
	shims := e.shimPIDs()
	if len(shims) != 1 {
		t.Fatalf("serving shims: %v, want one", shims)
	}
	shim := shims[0]
	vmm := e.sandboxPIDs()
	if len(vmm) == 0 {
		t.Fatal("no VMM process found")
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// containerd's cleanup of the dead shim ends the VM.
	deadline := time.Now().Add(30 * time.Second)
	for len(e.sandboxPIDs()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("VMM still running 30s after its shim was killed\n%s", e.shimLogs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _, _ := e.ctrErr("task", "ls", "-q")
	if strings.TrimSpace(out) != "" {
		t.Errorf("task still listed after its shim died: %q", out)
	}
	e.ctr("container", "delete", "k1")
	e.stop()
	auditLeaks(t, e, "k1")
}

// shimPIDs lists the serving shims: processes of the shim's binary
// started with containerd's address (the same binary also runs each
// sandbox's monitor, without arguments).
func (e *env) shimPIDs() []int {
	var pids []int
	for _, pid := range e.processes() {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if filepath.Base(exe) == "containerd-shim-kindling-v2" && bytes.Contains(cmdline, []byte("\x00-address\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sandboxPIDs lists the running VMMs of the test's sandboxes.
func (e *env) sandboxPIDs() []int {
	var pids []int
	for _, pid := range e.processes() {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(b, []byte("fake-firecracker")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stdin reaches the container: piped (end of file closes it), and on a
// terminal, where the container's output echoes the input and Ctrl-D ends
// it.
func TestContainerdStdin(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	runtime := "io.containerd.kindling.v2"

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", e.ctrArgs("kindling-test",
		"run", "--rm", "--runtime", runtime, testImage, "s1", "/bin/app", "cat")...)
	cmd.Stdin = strings.NewReader("piped input\n")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "piped input\n" {
		t.Errorf("cat of piped stdin = %q, %v; want the input back", out, err)
	}

	// A terminal: ctr needs one itself.
	tty := exec.CommandContext(ctx, "ctr", e.ctrArgs("kindling-test",
		"run", "--rm", "--tty", "--runtime", runtime, testImage, "s2", "/bin/app", "cat")...)
	ptmx, err := pty.StartWithSize(tty, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var got testutil.SyncBuffer
	readDone := make(chan struct{})
	go func() {
		io.Copy(&got, ptmx)
		close(readDone)
	}()
	// Wait until the task runs before typing, so the line is not eaten by
	// ctr's own terminal set-up.
	waitStatus(t, e, "s2", "RUNNING")
	if _, err := ptmx.Write([]byte("typed line\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(got.String(), "typed line") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ptmx.Write([]byte{4}) // Ctrl-D: end of input for cat
	werr := make(chan error, 1)
	go func() { werr <- tty.Wait() }()
	select {
	case err := <-werr:
		if err != nil {
			t.Errorf("ctr run --tty: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ctr run --tty still running 30s after Ctrl-D; output %q\n%s", got.String(), e.shimLogs())
	}
	ptmx.Close()
	<-readDone
	// The line arrives twice: the terminal's echo, then cat's copy.
	if n := strings.Count(got.String(), "typed line"); n < 2 {
		t.Errorf("terminal output %q: want the typed line echoed and copied back", got.String())
	}

	// The terminal's size follows ctr's (ResizePty).
	sz := exec.CommandContext(ctx, "ctr", e.ctrArgs("kindling-test",
		"run", "--rm", "--tty", "--runtime", runtime, testImage, "s3", "/bin/app", "winsize")...)
	ptmx3, err := pty.StartWithSize(sz, &pty.Winsize{Rows: 31, Cols: 101})
	if err != nil {
		t.Fatal(err)
	}
	out3, _ := io.ReadAll(ptmx3) // ends with EIO once ctr exits
	sz.Wait()
	ptmx3.Close()
	if !strings.Contains(string(out3), "winsize 31 101") {
		t.Errorf("terminal size in the container: %q, want winsize 31 101", out3)
	}
	e.stop()
	auditLeaks(t, e, "s1", "s2", "s3")
}

// containerd restarted under a running task: the task is still listed
// and controllable (exec, kill, delete) through the same shim.
func TestContainerdRestart(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	e.ctr("run", "-d", "--runtime", "io.containerd.kindling.v2", testImage, "r1", "/bin/app", "sleep", "1h")
	waitStatus(t, e, "r1", "RUNNING")
	e.stop()
	e.start()
	waitStatus(t, e, "r1", "RUNNING")
	if out := e.ctr("task", "exec", "--exec-id", "x1", "r1", "/bin/app", "echo", "after restart"); out != "after restart\n" {
		t.Errorf("exec after a containerd restart = %q", out)
	}
	e.ctr("task", "kill", "--signal", "SIGKILL", "r1")
	waitStatus(t, e, "r1", "STOPPED")
	e.ctr("task", "delete", "r1")
	e.ctr("container", "delete", "r1")
	e.stop()
	auditLeaks(t, e, "r1")
}

// A shim without a usable guest kernel refuses the task with one line
// naming the setting, before any VM is made, and leaves nothing behind.
func TestContainerdBadConfig(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	e.stop()
	missing := filepath.Join(e.dir, "no-such-kernel")
	for i, kv := range e.env {
		if strings.HasPrefix(kv, "KINDLING_KERNEL=") {
			e.env[i] = "KINDLING_KERNEL=" + missing
		}
	}
	e.start()
	_, serr, err := e.ctrErr("run", "--rm", "--runtime", "io.containerd.kindling.v2", testImage, "b1", "/bin/app")
	if err == nil || !strings.Contains(serr, "guest kernel "+missing) || !strings.Contains(serr, "set KINDLING_KERNEL") {
		t.Errorf("ctr run with a missing kernel: %v, stderr %q; want the kernel and KINDLING_KERNEL named", err, serr)
	}
	if ents, _ := os.ReadDir(e.shimRoot); len(ents) != 0 {
		t.Errorf("state root not empty after a refused task: %v", ents)
	}
	e.ctrErr("container", "delete", "b1")
	e.stop()
	auditLeaks(t, e, "b1")
}

// As root the shim runs VMs under the jailer unless told otherwise: a
// containerd whose environment names neither a jailer nor
// KINDLING_NO_JAILER gets its task refused with one line that says which
// variable to set in containerd's environment (not the CLI's --no-jailer),
// before any VM is made.
func TestContainerdNoJailerRefused(t *testing.T) {
	needs(t)
	if p, err := install.Find(install.Jailer, ""); err == nil {
		t.Skipf("skipping: a jailer is installed (%s): the shim would use it", p)
	}
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	e.stop()
	var env []string
	for _, kv := range e.env {
		if !strings.HasPrefix(kv, "KINDLING_NO_JAILER=") && !strings.HasPrefix(kv, "KINDLING_JAILER=") {
			env = append(env, kv)
		}
	}
	e.env = env
	e.start()
	_, serr, err := e.ctrErr("run", "--rm", "--runtime", "io.containerd.kindling.v2", testImage, "j1", "/bin/app")
	want := "set KINDLING_JAILER=PATH to the jailer, or KINDLING_NO_JAILER=1 to run VMs without it (Firecracker then runs as root), in containerd's environment"
	if err == nil || !strings.Contains(serr, want) || strings.Contains(serr, "--no-jailer") {
		t.Errorf("ctr run with neither a jailer nor KINDLING_NO_JAILER: %v, stderr %q; want %q", err, serr, want)
	}
	if ents, _ := os.ReadDir(e.shimRoot); len(ents) != 0 {
		t.Errorf("state root not empty after a refused task: %v", ents)
	}
	e.ctrErr("container", "delete", "j1")
	e.stop()
	auditLeaks(t, e, "j1")
}

// D7 on the Kubernetes path: a descriptor containerd holds without
// close-on-exec (inherited from whoever started it, and passed on to the
// shims it starts) is held by neither the serving shim nor the sandbox's
// monitor and VMM.
func TestD7ShimDescriptorsNotPassedToSandboxes(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	e.stop()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	pipe := fmt.Sprintf("pipe:[%d]", st.Ino)
	e.extra = []*os.File{nil, w} // containerd's fd 4
	e.start()
	if !holdsFile(e.cmd.Process.Pid, pipe) {
		t.Fatalf("containerd does not hold the inherited %s: the test passes it nothing", pipe)
	}
	e.ctr("run", "-d", "--runtime", "io.containerd.kindling.v2", testImage, "d7", "/bin/app", "sleep", "1h")
	vmms, shims := e.sandboxPIDs(), e.shimPIDs()
	if len(vmms) != 1 || len(shims) != 1 {
		t.Fatalf("want one VMM and one serving shim, got VMMs %v, shims %v", vmms, shims)
	}
	// The test's processes, by command line (the shim, the VMM) or
	// environment (the monitor, whose command line is its sandbox's ID).
	checked := 0
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == e.cmd.Process.Pid || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(p + "/cmdline")
		environ, _ := os.ReadFile(p + "/environ")
		if !bytes.Contains(cmdline, []byte(e.dir+"/")) && !bytes.Contains(environ, []byte(e.dir+"/")) {
			continue
		}
		checked++
		if holdsFile(pid, pipe) {
			exe, _ := os.Readlink(p + "/exe")
			t.Errorf("process %d (%s: %s) holds containerd's inherited %s", pid, exe, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), pipe)
		}
	}
	// The serving shim, the monitor (the shim's binary re-executed) and
	// the VMM at least.
	if checked < 3 {
		t.Errorf("checked %d processes of the test, want the shim, the monitor and the VMM", checked)
	}
	e.ctr("task", "kill", "--signal", "SIGKILL", "d7")
	waitStatus(t, e, "d7", "STOPPED")
	e.ctr("task", "delete", "d7")
	e.ctr("container", "delete", "d7")
	e.stop()
	auditLeaks(t, e, "d7")
}

// holdsFile reports whether process pid has a descriptor open on target
// (a /proc/PID/fd link's text, such as "pipe:[123]").
func holdsFile(pid int, target string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == target {
			return true
		}
	}
	return false
}

// ctr run --log-uri: the task's stdout and stderr go to a file
// (file:///PATH, appended to) or to a logging program (binary:///PATH?ARGS,
// run as containerd's shims run it: the streams on its fds 3 and 4, fd 5
// closed when it is ready, CONTAINER_ID and CONTAINER_NAMESPACE set).
func TestContainerdLogURI(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	e := startContainerd(t)
	e.ctr("image", "import", testImageTar(t, e.dir))
	runtime := "io.containerd.kindling.v2"

	logFile := filepath.Join(e.dir, "task.log")
	if err := os.WriteFile(logFile, []byte("before\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := e.ctr("run", "--rm", "--runtime", runtime, "--log-uri", "file://"+logFile, testImage, "l1", "/bin/app", "echo", "to the file")
	e.ctr("run", "--rm", "--runtime", runtime, "--log-uri", "file://"+logFile, testImage, "l2", "/bin/app", "stderr", "an error line")
	got, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "before\n") || !strings.Contains(string(got), "to the file") || !strings.Contains(string(got), "an error line") || strings.Contains(out, "to the file") {
		t.Errorf("log file %q (ctr's stdout %q): want what was there, then the first task's stdout and the second's stderr", got, out)
	}

	logger := filepath.Join(e.dir, "logger")
	script := `#!/bin/sh
# args: out PATH (from the URI's query)
echo "$CONTAINER_NAMESPACE/$CONTAINER_ID $*" > "$2.env"
cat <&3 > "$2.out" 4<&- 5>&- &
cat <&4 > "$2.err" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
`
	if err := os.WriteFile(logger, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(e.dir, "bin-log")
	uri := "binary://" + logger + "?out=" + base
	_, serr, err := e.ctrErr("run", "--rm", "--runtime", runtime, "--log-uri", uri, testImage, "l3", "/bin/app", "stderr", "to the program")
	if err != nil {
		t.Fatalf("ctr run --log-uri %s: %v\n%s", uri, err, serr)
	}
	for f, want := range map[string]string{".env": "kindling-test/l3 out " + base, ".err": "to the program"} {
		b, err := os.ReadFile(base + f)
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("the logging program's %s: %q, %v; want %q", f, b, err, want)
		}
	}
	e.ctr("run", "--rm", "--runtime", runtime, "--log-uri", uri, testImage, "l4", "/bin/app", "echo", "out to the program")
	if b, err := os.ReadFile(base + ".out"); err != nil || !strings.Contains(string(b), "out to the program") {
		t.Errorf("the logging program's stdout: %q, %v", b, err)
	}

	// Refused, with the reason, before any VM is made.
	_, serr, err = e.ctrErr("run", "--rm", "--runtime", runtime, "--log-uri", "file://relative.log", testImage, "l5", "/bin/app")
	if err == nil || !strings.Contains(serr, "want an absolute path") {
		t.Errorf("ctr run with a relative file URI: %v, stderr %q; want a refusal", err, serr)
	}
	e.ctrErr("container", "delete", "l5")
	e.stop()
	auditLeaks(t, e, "l1", "l2", "l3", "l4", "l5")
}
