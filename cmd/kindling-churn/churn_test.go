package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.MonitorMain() // the library path's monitors are this binary
	testutil.Main(m)
}

// TestChurnFake runs 50 cycles through the library and the CLI against the
// fake Firecracker and expects no failure and no leak.
func TestChurnFake(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	k := "50"
	if testing.Short() {
		k = "5"
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-k", k, "--firecracker", fc, "--memory", "16"}, &out, &errOut)
	t.Logf("summary:\n%s%s", out.String(), errOut.String())
	if err != nil {
		t.Fatalf("churn: %v", err)
	}
	for _, want := range []string{"library: " + k + " cycles (" + k + " ok, 0 failed)", "cli:     " + k + " cycles (" + k + " ok, 0 failed)", "leaks:   none"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

// TestChurnRealFirecracker is TestChurnFake against a real Firecracker,
// with fewer cycles (run the command itself for more).
func TestChurnRealFirecracker(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := testutil.Firecracker(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-k", "10", "--firecracker", fc}, &out, &out)
	t.Logf("summary:\n%s", out.String())
	if err != nil {
		t.Fatalf("churn: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"zero-cycles", []string{"-k", "0", "--fake"}, "-k 0"},
		{"bad-mode", []string{"--mode", "x", "--fake"}, `--mode "x"`},
		{"bad-net", []string{"--net", "bridge", "--fake"}, `--net "bridge"`},
		{"both-fc", []string{"--fake", "--firecracker", "/x"}, "not both"},
		{"extra-args", []string{"--fake", "extra"}, "unexpected arguments"},
		{"unknown-flag", []string{"--nope"}, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stderr, &stderr)
			var u *usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Fatalf("run(%q) = %v; want a usage error naming %q", tt.args, err, tt.want)
			}
			if code := exitCode(err, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
		})
	}
}

func TestRefusesBusyRoot(t *testing.T) {
	root := testutil.ShortTempDir(t)
	if err := os.Mkdir(filepath.Join(root, "someone"), 0o700); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"--mode", "lib", "--root", root, "--firecracker", "/bin/true"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "someone") {
		t.Fatalf("run on a root holding a sandbox = %v; want an error naming it", err)
	}
}

// TestLeakCheckFindsLeaks makes sure the checks are not vacuous: each
// subtest leaves one kind of leak and expects it reported.
func TestLeakCheckFindsLeaks(t *testing.T) {
	fc := testutil.FakeFirecracker(t)
	kernel := testutil.GuestKernel(t, guest.Options{Message: "leak", Mode: guest.Halt})
	tapName := fmt.Sprintf("kdchurn%x", os.Getpid()&0xffffff)
	tests := []struct {
		name  string
		root  bool     // needs root
		taps  []string // the taps the run would have owned
		leak  func(t *testing.T, rt *sandbox.Runtime) (cleanup func())
		wants []string
	}{
		{
			name: "tap",
			root: true,
			taps: []string{tapName},
			leak: func(t *testing.T, _ *sandbox.Runtime) func() {
				if _, err := netdev.CreateTap(context.Background(), netdev.TapSpec{Name: tapName}); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := netdev.DeleteTap(context.Background(), tapName, ""); err != nil {
						t.Error(err)
					}
				}
			},
			wants: []string{"tap still there: " + tapName},
		},
		{
			name: "tap-in-netns",
			root: true,
			taps: []string{tapName},
			leak: func(t *testing.T, _ *sandbox.Runtime) func() {
				name := fmt.Sprintf("kdchurn-%d", os.Getpid())
				errc := make(chan error, 1)
				go func() {
					// NewNamed moves this thread into the new namespace;
					// it stays locked so that it ends with the goroutine.
					runtime.LockOSThread()
					h, err := netns.NewNamed(name)
					if err == nil {
						h.Close()
					}
					errc <- err
				}()
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if _, err := netdev.CreateTap(context.Background(), netdev.TapSpec{Name: tapName, NetNS: name}); err != nil {
					netns.DeleteNamed(name)
					t.Fatal(err)
				}
				return func() {
					if err := netns.DeleteNamed(name); err != nil {
						t.Error(err)
					}
				}
			},
			wants: []string{"tap still there: " + tapName + " in network namespace /run/netns/kdchurn-"},
		},
		{
			name: "running-sandbox",
			leak: func(t *testing.T, rt *sandbox.Runtime) func() {
				ctx := context.Background()
				if _, err := rt.Create(ctx, sandbox.Spec{ID: "left", Kernel: kernel, Firecracker: fc, MemoryMiB: 16}, sandbox.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				if _, err := rt.Start(ctx, "left"); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := rt.Remove(ctx, "left", true); err != nil {
						t.Error(err)
					}
				}
			},
			wants: []string{"state root holds", "socket file left", "socket still bound", "names the state root"},
		},
		{
			// D4: a jailed VMM left running (the fake jailer's), which only
			// its jail and cgroup show.
			name: "running-jailed-sandbox",
			root: true,
			leak: func(t *testing.T, rt *sandbox.Runtime) func() {
				t.Setenv(sandbox.EnvNoJailer, "")
				t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
				ctx := context.Background()
				if _, err := rt.Create(ctx, sandbox.Spec{ID: "jleft", Kernel: kernel, Firecracker: fc, MemoryMiB: 16}, sandbox.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				if _, err := rt.Start(ctx, "jleft"); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := rt.Remove(ctx, "jleft", true); err != nil {
						t.Error(err)
					}
				}
			},
			wants: []string{"jail: chroot /srv/jailer/", "jail: cgroup /sys/fs/cgroup/", "jail: jailed process", "jail: jail uid"},
		},
		{
			// D4: a jail uid still allocated to a sandbox of the run (as a
			// monitor killed before it gave it back leaves it).
			name: "jail-uid",
			root: true,
			leak: func(t *testing.T, rt *sandbox.Runtime) func() {
				// A uid just above the default range, which no run uses.
				p := filepath.Join(sandbox.JailIDRegistry, "1610678300")
				if err := os.MkdirAll(sandbox.JailIDRegistry, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(filepath.Join(rt.Root(), "gone")), 0o600); err != nil {
					t.Fatal(err)
				}
				return func() { os.Remove(p) }
			},
			wants: []string{"jail: jail uid 1610678300 held for sandbox gone"},
		},
		{
			name: "descriptor",
			leak: func(t *testing.T, _ *sandbox.Runtime) func() {
				f, err := os.Open(os.DevNull)
				if err != nil {
					t.Fatal(err)
				}
				return func() { f.Close() }
			},
			wants: []string{"file descriptor: fd", os.DevNull},
		},
		{
			name: "goroutine",
			leak: func(t *testing.T, _ *sandbox.Runtime) func() {
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() { <-stop; close(done) }()
				return func() { close(stop); <-done }
			},
			wants: []string{"goroutines: 1 more"},
		},
		{
			name: "zombie-and-child",
			leak: func(t *testing.T, _ *sandbox.Runtime) func() {
				dead := exec.Command("true")
				if err := dead.Start(); err != nil {
					t.Fatal(err)
				}
				live := exec.Command("sleep", "60")
				if err := live.Start(); err != nil {
					t.Fatal(err)
				}
				// Let the first one die without being reaped.
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					if st, ok := readStat(dead.Process.Pid); ok && st.state == 'Z' {
						break
					}
				}
				return func() {
					dead.Wait()
					live.Process.Kill()
					live.Wait()
				}
			},
			wants: []string{"zombie process: pid", "child process still running"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root to create taps and network namespaces")
			}
			testutil.CheckLeaks(t)
			root := testutil.ShortTempDir(t)
			rt, err := sandbox.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			primeRuntime()
			base := takeHostSnapshot()
			cleanup := tt.leak(t, rt)
			check := leakCheck{root: rt.Root(), taps: tt.taps}
			leaks := check.findLeaks(base, 0)
			cleanup()
			got := strings.Join(leaks, "\n")
			for _, want := range tt.wants {
				if !strings.Contains(got, want) {
					t.Errorf("leaks do not mention %q:\n%s", want, got)
				}
			}
			if left := check.findLeaks(base, 2*time.Second); len(left) > 0 {
				t.Errorf("leaks remain after cleanup:\n%s", strings.Join(left, "\n"))
			}
		})
	}
}
