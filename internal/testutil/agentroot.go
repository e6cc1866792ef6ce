package testutil

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kindling-vm/kindling/internal/gotool"
)

// GuestAgentPath is where kindling's images hold the guest agent; a guest
// whose kernel command line says init=GuestAgentPath runs it as PID 1.
const GuestAgentPath = "/.kindling/kindling-agent"

// AgentBootArgs is the kernel command line of a guest that runs the agent
// as its init.
const AgentBootArgs = "console=ttyS0 reboot=k panic=1 init=" + GuestAgentPath

// agentPkg is the agent's package, relative to the module root.
const agentPkg = "./cmd/kindling-agent"

// agentBuild holds the once-per-process build of the agent.
var agentBuild struct {
	mu   sync.Mutex // guards the fields below
	dir  string     // temporary build directory, "" before the first build
	path string
	err  error
	done bool
}

// AgentBinary returns the kindling-agent executable, built as it ships
// (CGO_ENABLED=0, static) once per test process. Call Main (or
// CleanupBuilds) from TestMain so that the build directory is removed.
func AgentBinary(t testing.TB) string {
	t.Helper()
	p, err := AgentBinaryPath()
	if err != nil {
		t.Fatalf("build kindling-agent: %v", err)
	}
	return p
}

func buildAgentBinary() (string, error) {
	dir, err := os.MkdirTemp("", "kindling-agent-")
	if err != nil {
		return "", err
	}
	agentBuild.dir = dir
	return buildStatic(agentPkg, filepath.Join(dir, "kindling-agent"))
}

// CleanupBuilds removes the build directories of the fake Firecracker and
// the agent. Main calls it; a TestMain that cannot call Main calls it after
// m.Run.
func CleanupBuilds() {
	for _, dir := range []string{takeDir(&fake.mu, &fake.dir), takeDir(&agentBuild.mu, &agentBuild.dir)} {
		if dir == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "testutil: remove build directory: %v\n", err)
		}
	}
}

func takeDir(mu *sync.Mutex, dir *string) string {
	mu.Lock()
	defer mu.Unlock()
	d := *dir
	*dir = ""
	return d
}

// AgentRootOptions say what AgentRootfs puts in the image.
type AgentRootOptions struct {
	// SizeMiB is the image's size (default 64).
	SizeMiB int
	// Init, when set, is a host executable put at GuestAgentPath instead
	// of the agent (a guest whose "agent" never answers).
	Init string
	// Files are more files: guest path → content (mode 0644).
	Files map[string]string
}

// busyboxApplets are the commands AgentRootfs links to busybox in /bin.
var busyboxApplets = []string{
	"sh", "true", "false", "echo", "cat", "sleep", "env", "pwd", "id", "ls",
	"sha256sum", "kill", "tty", "stty", "head", "wc", "hostname", "whoami",
	"mkdir", "touch", "rm", "test", "printf", "dd", "stat", "tr", "od", "ps",
	"pkill", "pidof", "mv", "chmod", "yes",
}

// AgentRootfs builds an ext4 root filesystem whose init is the real agent
// (AgentBinary) at GuestAgentPath, with a static busybox for the commands
// the tests run (/bin/sh, cat, sleep, ...), users root, nobody and user
// (uid 1000, home /home/user) and the usual empty directories, and returns
// the image's path (removed at test cleanup). It skips the test when no
// static busybox is installed (Debian's busybox-static) or mkfs.ext4 is
// missing.
func AgentRootfs(t testing.TB, o AgentRootOptions) string {
	t.Helper()
	if _, err := staticBusybox(); err != nil {
		t.Skipf("skipping: the test guest needs a static busybox (install busybox-static): %v", err)
	}
	if _, err := findMkfs(); err != nil {
		t.Skipf("skipping: mkfs.ext4 not found (install e2fsprogs): %v", err)
	}
	if o.Init == "" {
		o.Init = AgentBinary(t)
	}
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := WriteAgentRootfs(img, o); err != nil {
		t.Fatal(err)
	}
	return img
}

// WriteAgentRootfs writes the image AgentRootfs makes to img, for callers
// without a testing.TB (test scripts, benchmarks). o.Init must be set
// (AgentBinaryPath gives the agent).
func WriteAgentRootfs(img string, o AgentRootOptions) error {
	bb, err := staticBusybox()
	if err != nil {
		return fmt.Errorf("the test guest needs a static busybox (install busybox-static): %w", err)
	}
	if o.Init == "" {
		return errors.New("WriteAgentRootfs: no init given")
	}
	tree, err := os.MkdirTemp("", "kindling-agentroot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	for _, d := range []string{"bin", "etc", "root", "home/user", "tmp", "run", "proc", "sys", "dev", "var/tmp", ".kindling"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(tree, "tmp"), 0o1777); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(tree, "home/user"), 1000, 1000); err != nil {
			return err
		}
	}
	if err := copyExecutable(o.Init, filepath.Join(tree, GuestAgentPath)); err != nil {
		return err
	}
	if err := copyExecutable(bb, filepath.Join(tree, "bin", "busybox")); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(tree, "bin", a)); err != nil {
			return err
		}
	}
	files := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"/etc/group":  "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
	}
	for p, c := range o.Files {
		files[p] = c
	}
	for p, c := range files {
		dst := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(c), 0o644); err != nil {
			return err
		}
	}
	size := o.SizeMiB
	if size == 0 {
		size = 64
	}
	return mkExt4(tree, img, size)
}

// AgentBinaryPath is AgentBinary for callers without a testing.TB.
func AgentBinaryPath() (string, error) {
	agentBuild.mu.Lock()
	defer agentBuild.mu.Unlock()
	if !agentBuild.done {
		agentBuild.done = true
		agentBuild.path, agentBuild.err = buildAgentBinary()
	}
	return agentBuild.path, agentBuild.err
}

// staticBusybox finds a busybox executable without a program interpreter
// (a dynamic one cannot run in a guest without the host's libraries).
func staticBusybox() (string, error) {
	p, err := exec.LookPath("busybox")
	if err != nil {
		p = "/bin/busybox"
	}
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", errors.New(p + " is dynamically linked")
		}
	}
	return p, nil
}

func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// NeedSimulatedGuest skips the test unless this process can run the fake
// Firecracker's simulated guest: root, loop devices and CAP_SYS_ADMIN.
func NeedSimulatedGuest(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("skipping: the simulated guest needs root to mount its image (running as uid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("skipping: the simulated guest needs loop devices: %v", err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	const capSysAdmin = 21
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps); err == nil && caps&(1<<capSysAdmin) == 0 {
				t.Skipf("skipping: the simulated guest needs CAP_SYS_ADMIN (effective capabilities %s)", strings.TrimSpace(v))
			}
		}
	}
}

// silentBuild holds the once-per-process build of the silent init.
var silentBuild struct {
	mu   sync.Mutex // guards the fields below
	path string
	err  error
	done bool
}

// SilentInit returns an init that never answers (it waits for SIGTERM),
// built once per test process into the agent's build directory; give it
// as AgentRootOptions.Init for a guest whose agent never answers.
func SilentInit(t testing.TB) string {
	t.Helper()
	agent := AgentBinary(t) // its directory is removed by CleanupBuilds
	silentBuild.mu.Lock()
	defer silentBuild.mu.Unlock()
	if !silentBuild.done {
		silentBuild.done = true
		silentBuild.path, silentBuild.err = buildStatic("./internal/testutil/testdata/silentinit", filepath.Join(filepath.Dir(agent), "silentinit"))
	}
	if silentBuild.err != nil {
		t.Fatalf("build the silent init: %v", silentBuild.err)
	}
	return silentBuild.path
}

// buildStatic builds the main package pkg of the module, CGO off, to out.
func buildStatic(pkg, out string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := gotool.Path()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
