package vmm

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// backend is one Firecracker to run a scenario against.
type backend struct {
	name string
	// path is the executable; fakeSettings the FAKEFC value for the fake.
	path         string
	fakeSettings string
	real         bool
}

// backends runs fn once against the fake (with settings) and once against
// the real Firecracker in $KINDLING_FIRECRACKER (skipped when unset), each
// as its own subtest with leak checks.
func backends(t *testing.T, settings string, fn func(t *testing.T, b backend)) {
	t.Helper()
	t.Run("fake", func(t *testing.T) {
		testutil.CheckLeaks(t)
		fn(t, backend{name: "fake", path: testutil.FakeFirecracker(t), fakeSettings: settings})
	})
	t.Run("real", func(t *testing.T) {
		path := testutil.Firecracker(t)
		testutil.CheckLeaks(t)
		fn(t, backend{name: "real", path: path, real: true})
	})
}

// testConfig returns a Config for b that boots the test guest with msg.
func testConfig(t *testing.T, b backend, msg string, mode guest.Mode) Config {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	cfg := Config{
		Firecracker: b.path,
		RunDir:      dir,
		Kernel:      testutil.GuestKernel(t, guest.Options{Message: msg, Mode: mode}),
		ConsolePath: filepath.Join(dir, "console.log"),
		MemoryMiB:   64,
	}
	if b.fakeSettings != "" {
		cfg.Env = []string{"FAKEFC=" + b.fakeSettings}
	}
	return cfg
}

// startMachine builds and starts a Machine, stopping it at cleanup.
func startMachine(t *testing.T, cfg Config, opts ...Option) *Machine {
	t.Helper()
	m, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopAndCheck(t, m) })
	return m
}

// stopAndCheck stops m and checks that the process is gone and its socket
// removed.
func stopAndCheck(t *testing.T, m *Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	select {
	case <-m.Done():
	default:
		t.Errorf("Done not closed after Stop")
	}
	if _, err := os.Lstat(m.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket %s still there after Stop (err %v)", m.SocketPath(), err)
	}
}

// waitForFile waits until the file at path contains want.
func waitForFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not contain %q after 5s; it holds %q", path, want, b)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestStartBootsGuest(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "kindling-boot-marker", guest.Halt)
		cfg.WaitConsole = "kindling-boot-marker"
		cfg.MetricsPath = filepath.Join(cfg.RunDir, "metrics.json")
		m := startMachine(t, cfg)

		waitForFile(t, cfg.ConsolePath, "kindling-boot-marker")
		info, err := m.Client().GetInstanceInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State != fcapi.StateRunning {
			t.Errorf("instance state %q, want Running", info.State)
		}
		ver, err := m.Version(context.Background())
		if err != nil || ver.IsZero() {
			t.Errorf("Version = %v, %v", ver, err)
		}
		t.Logf("%s Firecracker %s", b.name, ver)
		caps, err := m.Capabilities(context.Background())
		if err != nil || caps.Version != ver || !caps.Supports(fcapi.FeatureEntropy) {
			t.Errorf("Capabilities = %+v, %v", caps, err)
		}
		pid, st := m.PID()
		if got, err := kunix.ProcessStartTime(pid); err != nil || got != st {
			t.Errorf("PID() = %d, %d; /proc says %d, %v", pid, st, got, err)
		}
		if err := m.FlushMetrics(context.Background()); err != nil {
			t.Errorf("FlushMetrics: %v", err)
		}
		if fi, err := os.Stat(cfg.MetricsPath); err != nil || fi.Size() == 0 {
			t.Errorf("metrics file after a flush: %v, %v", fi, err)
		}
		// The log file holds Firecracker's log, not the console.
		if b, err := os.ReadFile(m.LogPath()); err != nil {
			t.Errorf("log file: %v", err)
		} else if bytes.Contains(b, []byte("kindling-boot-marker")) {
			t.Errorf("console text leaked into the log file")
		}
	})
}

func TestStartConsoleWriter(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "to-a-writer", guest.Halt)
		cfg.ConsolePath = ""
		var buf safeBuffer
		cfg.Console = &buf
		cfg.WaitConsole = "to-a-writer"
		m := startMachine(t, cfg)
		stopAndCheck(t, m)
		if !strings.Contains(buf.String(), "to-a-writer") {
			t.Errorf("console writer got %q", buf.String())
		}
	})
}

func TestPowerOffExitsZero(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "bye", guest.PowerOff)
		m := startMachine(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := m.Wait(ctx)
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if !st.Success() {
			t.Errorf("exit status %v, want 0", st)
		}
		waitForFile(t, cfg.ConsolePath, "bye")
	})
}

func TestPauseResume(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		m := startMachine(t, testConfig(t, b, "pr", guest.Halt))
		ctx := context.Background()
		if err := m.Resume(ctx); !errors.Is(err, ErrInvalidState) {
			t.Errorf("Resume of a running VM: %v, want ErrInvalidState", err)
		}
		if err := m.Pause(ctx); err != nil {
			t.Fatalf("Pause: %v", err)
		}
		assertInstanceState(t, m, fcapi.StatePaused)
		if err := m.Pause(ctx); !errors.Is(err, ErrInvalidState) {
			t.Errorf("Pause of a paused VM: %v, want ErrInvalidState", err)
		}
		if err := m.Resume(ctx); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		assertInstanceState(t, m, fcapi.StateRunning)
	})
}

func assertInstanceState(t *testing.T, m *Machine, want fcapi.InstanceState) {
	t.Helper()
	info, err := m.Client().GetInstanceInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State != want {
		t.Errorf("instance state %q, want %q", info.State, want)
	}
}

func TestNewInvalidConfig(t *testing.T) {
	testutil.CheckLeaks(t)
	dir := testutil.ShortTempDir(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"empty", Config{}},
		{"no kernel", Config{Firecracker: "/bin/true", RunDir: dir}},
		{"missing kernel", Config{Firecracker: "/bin/true", RunDir: dir, Kernel: filepath.Join(dir, "nope")}},
		{"too many vcpus", Config{Firecracker: "/bin/true", RunDir: dir, Kernel: "/bin/true", VCPUs: 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, %v; want ErrInvalidConfig", m, err)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("New created files: %v", ents)
	}
}

func TestStartTwice(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	m := startMachine(t, testConfig(t, b, "x", guest.Halt))
	if err := m.Start(context.Background()); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("second Start: %v, want ErrInvalidState", err)
	}
}

// TestStartFailures covers Firecracker dying or hanging during start: a
// clear error, and no process, socket or file left behind.
func TestStartFailures(t *testing.T) {
	tests := []struct {
		name     string
		settings string
		timeout  time.Duration
		want     []string // substrings of the error
		wantIs   error
	}{
		{name: "die at start", settings: `{"die_at_start":true}`, timeout: 5 * time.Second,
			want: []string{"before its API was ready", "exit status 1"}, wantIs: ErrExited},
		{name: "exit at first request", settings: `{"exit_at":1}`, timeout: 5 * time.Second,
			want: []string{"exit status 1"}, wantIs: ErrExited},
		{name: "exit during boot steps", settings: `{"exit_at":3}`, timeout: 5 * time.Second,
			want: []string{"boot step", "exit status 1"}, wantIs: ErrExited},
		{name: "no socket", settings: `{"no_socket":true}`, timeout: 300 * time.Millisecond,
			want: []string{"wait for firecracker api"}, wantIs: context.DeadlineExceeded},
		{name: "drive refused", settings: `{"fail":[{"method":"PUT","path":"/drives/data","status":400,"fault":"injected drive fault"}]}`,
			timeout: 5 * time.Second, want: []string{"boot step drives", "injected drive fault"}, wantIs: fcapi.ErrBadRequest},
		{name: "instance start refused", settings: `{"fail":[{"method":"PUT","path":"/actions","status":400,"fault":"no boot for you"}]}`,
			timeout: 5 * time.Second, want: []string{"boot step instance-start", "no boot for you"}, wantIs: fcapi.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			b := backend{name: "fake", path: testutil.FakeFirecracker(t), fakeSettings: tt.settings}
			cfg := testConfig(t, b, "never", guest.Halt)
			data := filepath.Join(cfg.RunDir, "data.img")
			if err := os.WriteFile(data, make([]byte, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Drives = []Drive{{ID: "data", Path: data}}
			cfg.Placeholders = 2
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			began := time.Now()
			err = m.Start(ctx)
			t.Logf("Start failed after %v: %v", time.Since(began), err)
			if err == nil {
				m.Stop(context.Background())
				t.Fatal("Start succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not match %v", err, tt.wantIs)
			}
			assertNothingLeft(t, m, cfg)
		})
	}
}

// assertNothingLeft checks that a failed start left no process, socket or
// log file.
func assertNothingLeft(t *testing.T, m *Machine, cfg Config) {
	t.Helper()
	select {
	case <-m.Done():
	default:
		t.Errorf("process not reaped after a failed start")
	}
	left := []string{m.SocketPath(), m.LogPath()}
	for i := range cfg.Placeholders {
		left = append(left, filepath.Join(cfg.RunDir, placeholderID(i)+".img"))
	}
	for _, p := range left {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (err %v)", p, err)
		}
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Errorf("Stop after a failed start: %v", err)
	}
}

// TestStartCancelled cancels Start's context at points during start-up.
func TestStartCancelled(t *testing.T) {
	for _, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			testutil.CheckLeaks(t)
			// Each API answer takes 5 ms, so the boot steps take ~50 ms.
			b := backend{name: "fake", path: testutil.FakeFirecracker(t), fakeSettings: `{"delay":"5ms"}`}
			cfg := testConfig(t, b, "x", guest.Halt)
			cfg.Placeholders = 2
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(after, cancel)
			err = m.Start(ctx)
			if err == nil {
				t.Fatal("Start succeeded despite the cancellation")
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Start error %v does not match context.Canceled", err)
			}
			assertNothingLeft(t, m, cfg)
		})
	}
}

// TestStartSurvivesCtxCancel checks that a started VMM does not die when
// Start's context is cancelled afterwards.
func TestStartSurvivesCtxCancel(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	m, err := New(testConfig(t, b, "x", guest.Halt))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndCheck(t, m) })
	cancel()
	select {
	case <-m.Done():
		t.Fatal("VMM exited when the start context was cancelled")
	case <-time.After(100 * time.Millisecond):
	}
	assertInstanceState(t, m, fcapi.StateRunning)
}

func TestStaleSocket(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "x", guest.Halt)
		cfg.SocketPath = filepath.Join(cfg.RunDir, "api.sock")
		// A socket file whose listener is gone, as a dead VMM leaves it.
		l, err := net.Listen("unix", cfg.SocketPath)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		m := startMachine(t, cfg)
		assertInstanceState(t, m, fcapi.StateRunning)
	})
}

func TestLiveSocketRefused(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	first := startMachine(t, testConfig(t, b, "x", guest.Halt))
	cfg := testConfig(t, b, "y", guest.Halt)
	cfg.SocketPath = first.SocketPath()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "live process") {
		t.Fatalf("Start on a live socket: %v, want a live-process error", err)
	}
	assertInstanceState(t, first, fcapi.StateRunning)
}

// safeBuffer is a bytes.Buffer safe for concurrent use.
type safeBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestVsockSocketRemoved(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "vsock", guest.Halt)
		cfg.Vsock = &Vsock{CID: 3, Path: filepath.Join(cfg.RunDir, "v.sock")}
		m := startMachine(t, cfg)
		if fi, err := os.Lstat(cfg.Vsock.Path); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("vsock socket: %v, %v", fi, err)
		}
		stopAndCheck(t, m)
		if _, err := os.Lstat(cfg.Vsock.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("vsock socket left after Stop: %v", err)
		}
	})
}

func TestWaitConsoleNeverShown(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "something else", guest.PowerOff)
		cfg.WaitConsole = "never-printed"
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = m.Start(ctx)
		if err == nil || !strings.Contains(err.Error(), "never-printed") {
			t.Fatalf("Start: %v, want an error naming the console text", err)
		}
		t.Logf("Start: %v", err)
		assertNothingLeft(t, m, cfg)
	})
}
