package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/guest"
)

func TestMain(m *testing.M) { Main(m) }

// recorder is a testing.TB that records failures and skips instead of
// reporting them, so that a helper's verdict can be checked. Run runs a
// function with it the way the testing package runs a test: on its own
// goroutine, then the cleanups in reverse order.
type recorder struct {
	testing.TB // the real test: Name, Setenv, TempDir, Helper, Logf

	mu       sync.Mutex // guards the fields below
	errors   []string
	skipped  string
	failed   bool
	cleanups []func()
}

func newRecorder(t *testing.T) *recorder { return &recorder{TB: t} }

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
	r.failed = true
}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *recorder) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Skip(args ...any) { r.Skipf("%s", fmt.Sprint(args...)) }

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *recorder) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// Run runs body, then the cleanups, each on a fresh goroutine so that
// Fatal and Skip (runtime.Goexit) behave as in a real test.
func (r *recorder) Run(body func(tb testing.TB)) {
	run := func(f func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		<-done
	}
	run(func() { body(r) })
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		run(f)
	}
}

func (r *recorder) report() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

func TestRealBinaries(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	helpers := map[string]func(testing.TB) string{EnvFirecracker: Firecracker, EnvJailer: Jailer}
	tests := []struct {
		name    string
		value   string
		want    string // "skip", "fail" or "ok"
		isShort bool
	}{
		{"unset", "", "skip", false},
		{"missing file", filepath.Join(t.TempDir(), "nope"), "fail", false},
		{"not executable", notExec, "fail", false},
		{"executable", exe, "ok", false},
	}
	for env, helper := range helpers {
		for _, tt := range tests {
			t.Run(env+"/"+tt.name, func(t *testing.T) {
				if testing.Short() && tt.want != "skip" {
					t.Skip("-short makes every real-binary helper skip")
				}
				t.Setenv(env, tt.value)
				want := tt.want
				if env == EnvJailer && os.Geteuid() != 0 && want == "ok" {
					want = "skip"
				}
				r := newRecorder(t)
				var got string
				r.Run(func(tb testing.TB) { got = helper(tb) })
				switch {
				case want == "skip" && (r.skipped == "" || r.Failed()):
					t.Fatalf("want a skip, got skip %q, errors %q", r.skipped, r.report())
				case want == "skip" && !strings.Contains(r.skipped, env) && !strings.Contains(r.skipped, "root") && !strings.Contains(r.skipped, "-short"):
					t.Fatalf("skip reason %q does not name %s", r.skipped, env)
				case want == "fail" && !r.Failed():
					t.Fatalf("want a failure, got %q (skip %q)", got, r.skipped)
				case want == "ok" && (r.Failed() || r.skipped != "" || got != tt.value):
					t.Fatalf("want %q, got %q, skip %q, errors %q", tt.value, got, r.skipped, r.report())
				}
			})
		}
	}
}

func TestShortTempDir(t *testing.T) {
	var dir string
	t.Run("make", func(t *testing.T) {
		dir = ShortTempDir(t)
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			t.Fatalf("stat %q: %v", dir, err)
		}
		// Room for a socket name under the 108-byte limit, with margin.
		if n := len(filepath.Join(dir, "firecracker.socket")); n > 60 {
			t.Fatalf("socket path inside is %d bytes: %q", n, dir)
		}
		if other := ShortTempDir(t); other == dir {
			t.Fatal("two calls gave the same directory")
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%q still there after cleanup: %v", dir, err)
	}
}

func TestGuestKernel(t *testing.T) {
	o := guest.Options{Message: "from testutil", Mode: guest.PowerOff}
	p := GuestKernel(t, o)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := guest.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != o.Output() || got.Mode != o.Mode {
		t.Fatalf("Parse = %+v, want %+v", got, o)
	}

	r := newRecorder(t)
	r.Run(func(tb testing.TB) { GuestKernel(tb, guest.Options{Message: "\x00"}) })
	if !r.Failed() {
		t.Fatal("GuestKernel with an invalid message did not fail the test")
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "module github.com/kindling-vm/kindling\n") {
		t.Fatalf("%s/go.mod is not kindling's", root)
	}
}

func TestFakeFirecracker(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goFiles, _ := filepath.Glob(filepath.Join(root, fakePkg, "*.go"))
	if len(goFiles) == 0 {
		t.Skipf("skipping: %s has no Go files yet", fakePkg)
	}
	p := FakeFirecracker(t)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("%s is not executable", p)
	}
	if again := FakeFirecracker(t); again != p {
		t.Fatalf("second call gave %q, want the same %q", again, p)
	}
}

// TestGoBuild checks that a compile error reaches the caller with the
// compiler's output, using a throwaway module.
func TestGoBuild(t *testing.T) {
	goBin, err := gotool.Path()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		src     string
		wantErr string // "" for success
	}{
		{"builds", "package main\nfunc main() {}\n", ""},
		{"compile error", "package main\nfunc main() { undefinedThing() }\n", "undefinedThing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/m\n\ngo 1.21\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, "cmd", "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "cmd", "x", "main.go"), []byte(tt.src), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "x.bin")
			err := goBuild(goBin, dir, "./cmd/x", out)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(out); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("goBuild = %v, want an error holding %q", err, tt.wantErr)
			}
		})
	}
}
