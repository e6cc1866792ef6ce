package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/guest"
)

// Environment variables naming real binaries for real-Firecracker tests.
const (
	EnvFirecracker = "KINDLING_FIRECRACKER"
	EnvJailer      = "KINDLING_JAILER"
)

// fakePkg is the fake Firecracker's package, relative to the module root.
const fakePkg = "./internal/cmd/fake-firecracker"

// fake holds the once-per-process build of the fake Firecracker.
var fake struct {
	mu   sync.Mutex // guards the fields below
	dir  string     // temporary build directory, "" before the first build
	path string     // built executable, "" unless the build succeeded
	err  error      // build error, reported to every caller
	done bool       // a build was attempted
}

// Main is called from a package's TestMain: it runs the tests, then removes
// the temporary build directories of the fake Firecracker and the agent
// (CleanupBuilds), and exits with
// m.Run's code.
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
//
// As root, kindling runs sandboxes under the jailer by default; test rigs
// run the fake Firecracker, which the real jailer cannot jail, so Main sets
// KINDLING_NO_JAILER=1 unless the environment sets it already. Tests of the
// jailer policy clear it themselves.
func Main(m *testing.M) {
	if _, ok := os.LookupEnv("KINDLING_NO_JAILER"); !ok {
		os.Setenv("KINDLING_NO_JAILER", "1")
	}
	code := m.Run()
	CleanupBuilds()
	os.Exit(code)
}

// FakeFirecracker returns the path of the fake Firecracker executable, built
// once per test process from ./internal/cmd/fake-firecracker with `go build`
// (go is found on PATH). It fails the test with the build output if the
// fake cannot be built. Call Main from TestMain so the build directory is
// removed at the end.
func FakeFirecracker(t testing.TB) string {
	t.Helper()
	path, err := BuildFakeFirecracker()
	if err != nil {
		t.Fatalf("build fake firecracker: %v", err)
	}
	return path
}

// BuildFakeFirecracker is FakeFirecracker for code that has no testing.TB,
// such as Example functions: it returns the fake's path, building it once
// per process, or the build's error. Main removes the build directory.
func BuildFakeFirecracker() (string, error) {
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if !fake.done {
		fake.done = true
		fake.path, fake.err = buildFake()
	}
	return fake.path, fake.err
}

// buildFake builds the fake Firecracker; fake.mu is held.
func buildFake() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := gotool.Path()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "kindling-fakefc-")
	if err != nil {
		return "", err
	}
	fake.dir = dir
	out := filepath.Join(dir, "fake-firecracker")
	// Statically linked, as the real Firecracker is, so that the fake
	// jailer (FakeJailer) can run it in a chroot.
	if err := goBuild(goBin, root, fakePkg, out, "CGO_ENABLED=0"); err != nil {
		return "", err
	}
	return out, nil
}

// goBuild builds the main package pkg of the module in root into out. The
// error holds the compiler's output.
func goBuild(goBin, root, pkg, out string, env ...string) error {
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, root, err, b)
	}
	return nil
}

// ModuleRoot returns the directory holding kindling's go.mod: found from
// this source file's location, else from `go env GOMOD`.
func ModuleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	goBin, err := gotool.Path()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(goBin, "env", "GOMOD")
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w: %s", err, stderr.Bytes())
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("find module root: not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// Firecracker returns the path in $KINDLING_FIRECRACKER, or skips the test
// when it is unset or -short is set. A path that is set but not an
// executable file fails the test.
func Firecracker(t testing.TB) string {
	t.Helper()
	return realBinary(t, EnvFirecracker, "Firecracker")
}

// Jailer returns the path in $KINDLING_JAILER, or skips the test when it is
// unset, -short is set or the test does not run as root.
func Jailer(t testing.TB) string {
	t.Helper()
	p := realBinary(t, EnvJailer, "jailer")
	if os.Geteuid() != 0 {
		t.Skipf("skipping: the jailer needs root (running as uid %d)", os.Geteuid())
	}
	return p
}

func realBinary(t testing.TB, env, what string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipping real %s test in -short mode", what)
	}
	p := os.Getenv(env)
	if p == "" {
		t.Skipf("skipping real %s test: set %s to the path of a %s binary", what, env, what)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("%s=%q: %v", env, p, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("%s=%q: not an executable file", env, p)
	}
	return p
}

// ShortTempDir makes a fresh directory under os.TempDir() with a short name,
// so that Unix socket paths inside stay far below 108 bytes, and removes it
// at test cleanup.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kd")
	if err != nil {
		t.Fatalf("make short temp dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove short temp dir: %v", err)
		}
	})
	return dir
}

// GuestKernel writes a test guest with options o into a temporary directory
// removed at test cleanup, and returns its path.
func GuestKernel(t testing.TB, o guest.Options) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "guest.elf")
	if err := guest.WriteFile(p, o); err != nil {
		t.Fatalf("write test guest: %v", err)
	}
	return p
}
