package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
)

func TestMain(m *testing.M) {
	defer func() {
		if build.dir != "" {
			_ = os.RemoveAll(build.dir)
		}
	}()
	testutil.Main(m)
}

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// binary builds kindlingd once per test process.
func binary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		root, err := testutil.ModuleRoot()
		if err != nil {
			build.err = err
			return
		}
		goBin, err := gotool.Path()
		if err != nil {
			build.err = err
			return
		}
		if build.dir, build.err = os.MkdirTemp("", "kindlingd-test-"); build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "kindlingd")
		cmd := exec.Command(goBin, "build", "-o", build.path, "./cmd/kindlingd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if build.err != nil {
		t.Fatalf("build kindlingd: %v", build.err)
	}
	return build.path
}

// daemon is a kindlingd process under test.
type daemon struct {
	cmd  *exec.Cmd
	root string
	sock string
	// output is what it wrote to stdout and stderr, in the order
	// written: both go into one pipe, so a line logged before another
	// printed is read before it ("listening" before "kindlingd: ready").
	output *testutil.SyncBuffer
	done   chan struct{}
	err    error
}

// startDaemon runs kindlingd on root and waits until it serves.
func startDaemon(t *testing.T, root string, args ...string) *daemon {
	t.Helper()
	return startCmd(t, root, filepath.Join(root, socketName), exec.Command(binary(t), append([]string{"--root", root}, args...)...))
}

// startCmd runs cmd, a kindlingd serving sock, and waits until it serves.
func startCmd(t *testing.T, root, sock string, cmd *exec.Cmd) *daemon {
	t.Helper()
	return startCmdWith(t, root, sock, cmd, cmd.Start)
}

// startCmdWith is startCmd with start starting cmd.
func startCmdWith(t *testing.T, root, sock string, cmd *exec.Cmd, start func() error) *daemon {
	t.Helper()
	d := &daemon{root: root, sock: sock, output: &testutil.SyncBuffer{}, done: make(chan struct{})}
	d.cmd = cmd
	d.cmd.Env = append(os.Environ(), sandbox.EnvFirecracker+"="+testutil.FakeFirecracker(t))
	// The same writer for both: exec.Cmd then gives the child one pipe
	// for the two, which keeps their order. Two pipes, copied by two
	// goroutines, could show "ready" before the lines logged ahead of it.
	d.cmd.Stdout = d.output
	d.cmd.Stderr = d.output
	if err := start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.output.String(), "kindlingd: ready") {
		select {
		case <-d.done:
			t.Fatalf("kindlingd exited early: %v\n%s", d.err, d.output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kindlingd not ready after 20 s:\n%s", d.output)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return d
}

func (d *daemon) client(t *testing.T) *remote.Client {
	t.Helper()
	c, err := remote.New(remote.Config{Host: "unix://" + d.sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// wait waits for the daemon's exit, at most d.
func (d *daemon) wait(t *testing.T, bound time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(bound):
		t.Fatalf("kindlingd still running after %v:\n%s", bound, d.output)
		return nil
	}
}

// openRuntime opens root as the CLI would.
func openRuntime(t *testing.T, root string) *sandbox.Runtime {
	t.Helper()
	rt, err := sandbox.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// cleanRoot removes every sandbox of root and checks that no process of
// it (a monitor or a VMM, found by the root in its command line or
// environment) is left.
func cleanRoot(t *testing.T, root string) {
	t.Helper()
	ctx := context.Background()
	rt := openRuntime(t, root)
	infos, err := rt.List(ctx, sandbox.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if err := rt.Remove(ctx, in.ID, true); err != nil {
			t.Errorf("remove %s: %v", in.ID, err)
		}
	}
	if _, err := rt.GC(ctx); err != nil {
		t.Errorf("gc: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesOf(root)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of %s left: %v", root, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesOf lists the processes whose command line or environment names
// root.
func processesOf(root string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		for _, f := range []string{"cmdline", "environ"} {
			b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), f))
			if bytes.Contains(b, []byte(root)) {
				if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !strings.Contains(string(st), ") Z ") {
					out = append(out, e.Name()+" "+strings.ReplaceAll(string(b), "\x00", " "))
				}
				break
			}
		}
	}
	return out
}

// SIGTERM drains: a request in flight finishes, kindlingd exits 0, its
// socket is gone, and the sandboxes keep running.
func TestSIGTERMDrains(t *testing.T) {
	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	d := startDaemon(t, root, "--drain", "5s")
	c := d.client(t)
	ctx := context.Background()
	for _, id := range []string{"waited", "survivor"} {
		if _, err := c.Create(ctx, sandbox.Spec{ID: id, Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	waited := make(chan error, 1)
	go func() {
		exit, err := c.Wait(ctx, "waited")
		if err == nil && exit == nil {
			err = errors.New("no exit status")
		}
		waited <- err
	}()
	time.Sleep(200 * time.Millisecond) // the Wait is in flight
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// The in-flight Wait ends when the sandbox stops, stopped by the CLI's
	// runtime on the same root, while kindlingd drains.
	rt := openRuntime(t, root)
	if err := rt.Stop(ctx, "waited", sandbox.StopGrace(0)); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Errorf("the in-flight Wait: %v", err)
	}
	if err := d.wait(t, 10*time.Second); err != nil {
		t.Errorf("kindlingd exit: %v\n%s", err, d.output)
	}
	if _, err := os.Stat(d.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after exit: %v", err)
	}
	if in, err := rt.Inspect(ctx, "survivor"); err != nil || in.Status != sandbox.Running {
		t.Errorf("survivor after kindlingd exited: %+v, %v", in.Status, err)
	}
}

// SIGKILL under load loses no sandbox: every create the server answered is
// there, running, and a new kindlingd re-adopts them; removing them then
// leaves no process behind.
func TestSIGKILLUnderLoad(t *testing.T) {
	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	d := startDaemon(t, root)
	ctx := context.Background()

	var mu sync.Mutex
	var started []string // sandboxes the server said it started
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		c := d.client(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				if _, err := c.Create(ctx, sandbox.Spec{ID: id, Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); err != nil {
					return
				}
				if _, err := c.Start(ctx, id); err != nil {
					return
				}
				mu.Lock()
				started = append(started, id)
				mu.Unlock()
				if _, err := c.List(ctx, sandbox.ListOptions{}); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = d.wait(t, 5*time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(started) == 0 {
		t.Fatalf("no sandbox started before the kill:\n%s", d.output)
	}
	rt := openRuntime(t, root)
	for _, id := range started {
		in, err := rt.Inspect(ctx, id)
		if err != nil || in.Status != sandbox.Running {
			t.Errorf("sandbox %s after SIGKILL of kindlingd: %v, %v", id, in.Status, err)
		}
	}
	// A new kindlingd on the same root serves them all.
	d2 := startDaemon(t, root)
	infos, err := d2.client(t).List(ctx, sandbox.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, in := range infos {
		seen[in.ID] = true
	}
	for _, id := range started {
		if !seen[id] {
			t.Errorf("the restarted kindlingd does not list %s", id)
		}
	}
	t.Logf("%d sandboxes started before SIGKILL, %d listed after restart", len(started), len(infos))
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d2.wait(t, 15*time.Second); err != nil {
		t.Errorf("second kindlingd exit: %v", err)
	}
}

// Bad flags and a second kindlingd on a locked root fail with one line,
// leaving nothing behind.
func TestBadStart(t *testing.T) {
	root := testutil.ShortTempDir(t)
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("# a comment\nkey-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"tcp without tls off loopback", []string{"--listen", "tcp://0.0.0.0:0", "--api-key-file", keys}, "loopback"},
		{"tcp without keys", []string{"--listen", "tcp://127.0.0.1:0"}, "--api-key-file"},
		{"relative unix path", []string{"--listen", "unix://rel.sock"}, "absolute path"},
		{"half tls", []string{"--tls-cert", "c.pem"}, "--tls-key"},
		{"empty key file", []string{"--api-key-file", "/dev/null"}, "holds no key"},
		{"unknown flag", []string{"--frobnicate"}, "unknown flag"},
		{"bad pool", []string{"--pool", "base"}, "TEMPLATE=N"},
		{"negative pool memory", []string{"--pool-memory", "-1"}, "--pool-memory"},
		{"too many spare monitors", []string{"--spare-monitors", "65"}, "--spare-monitors 65: give 0 to 64"},
		{"negative spare monitors", []string{"--spare-monitors", "-1"}, "--spare-monitors -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), append([]string{"--root", root}, tt.args...), &bytes.Buffer{}, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
			var line bytes.Buffer
			exitCode(err, &line)
			if strings.Count(line.String(), "\n") != 1 {
				t.Errorf("error is not one line: %q", line.String())
			}
		})
	}
	d := startDaemon(t, root)
	second := exec.Command(binary(t), "--root", root)
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another kindlingd serves it") {
		t.Errorf("second kindlingd: %v: %s", err, out)
	}
	if _, err := os.Stat(d.sock); err != nil {
		t.Errorf("the first kindlingd's socket after the second failed: %v", err)
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".kindlingd-sock-") {
			t.Errorf("left in the root: %s", e.Name())
		}
	}
}

// Socket activation: kindlingd serves the sockets systemd passes instead
// of making its own, and leaves their files alone when it exits.
func TestSocketActivation(t *testing.T) {
	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	sock := filepath.Join(root, "activated.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	f, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	defer f.Close()
	// As systemd does after fork: LISTEN_PID is the pid that execs kindlingd.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=kindlingd.socket exec "$0" "$@"`, binary(t), "--root", root)
	cmd.ExtraFiles = []*os.File{f}
	d := startCmd(t, root, sock, cmd)
	_ = f.Close()
	c := d.client(t)
	if _, err := c.List(context.Background(), sandbox.ListOptions{}); err != nil {
		t.Fatalf("list over the activated socket: %v\n%s", err, d.output)
	}
	if _, err := os.Stat(filepath.Join(root, socketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kindlingd made its own socket too: %v", err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t, 10*time.Second); err != nil {
		t.Errorf("exit: %v\n%s", err, d.output)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("the activated socket's file after exit: %v", err)
	}
}
