package fakefc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// syncBuffer is a bytes.Buffer safe for the exec copier and the test.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one fake (or real) Firecracker process under test.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	dir    string
	sock   string
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{} // closed once Wait returned
	state  *os.ProcessState
	client *http.Client
}

// spawnOpts say how to spawn a process.
type spawnOpts struct {
	bin      string   // executable; the fake when ""
	settings string   // $FAKEFC
	args     []string // extra arguments after --api-sock and --id
	dir      string   // working directory for files; a new short one when ""
	noWait   bool     // do not wait for the API socket
}

// spawn starts a process, waits for its API socket unless o.noWait, and
// registers a cleanup that kills and reaps it.
func spawn(t testing.TB, o spawnOpts) *proc {
	t.Helper()
	if o.bin == "" {
		o.bin = testutil.FakeFirecracker(t)
	}
	if o.dir == "" {
		o.dir = testutil.ShortTempDir(t)
	}
	p := &proc{t: t, dir: o.dir, sock: filepath.Join(o.dir, "api.sock"), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	args := append([]string{"--api-sock", p.sock, "--id", "test-vm"}, o.args...)
	p.cmd = exec.Command(o.bin, args...)
	p.cmd.Env = append(os.Environ(), fakefc.EnvSettings+"="+o.settings)
	p.cmd.Dir = o.dir // relative paths in requests (vsock sockets) land here
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", o.bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	p.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.sock)
		},
	}, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		p.client.CloseIdleConnections()
		p.kill()
		os.Remove(p.sock)
	})
	if !o.noWait {
		p.waitSocket()
	}
	return p
}

// kill sends SIGKILL (if the process still runs) and reaps it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitSocket waits until the API socket accepts connections.
func (p *proc) waitSocket() {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", p.sock); err == nil {
			c.Close()
			return
		}
		if p.exited() {
			p.t.Fatalf("process exited before serving its API: %v\nstderr: %s\nstdout: %s", p.state, p.stderr, p.stdout)
		}
		time.Sleep(time.Millisecond)
	}
	p.t.Fatalf("API socket %s not ready after 10s", p.sock)
}

// waitExit waits for the process to end and returns its exit code (-1 when
// killed by a signal) and the signal, if any.
func (p *proc) waitExit(timeout time.Duration) (int, syscall.Signal) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("process still running after %v", timeout)
	}
	ws, _ := p.state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

// stillRunning fails the test if the process ends within d.
func (p *proc) stillRunning(d time.Duration) {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("process exited (%v), want it running\nstderr: %s", p.state, p.stderr)
	case <-time.After(d):
	}
}

// do sends one API request and returns the status and body.
func (p *proc) do(method, path, body string) (int, string) {
	p.t.Helper()
	status, b, err := p.try(method, path, body)
	if err != nil {
		p.t.Fatalf("%s %s: %v\nstderr: %s", method, path, err, p.stderr)
	}
	return status, b
}

// try is do without failing the test on a transport error.
func (p *proc) try(method, path, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, r)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// must sends a request that must succeed with want.
func (p *proc) must(want int, method, path, body string) string {
	p.t.Helper()
	status, b := p.do(method, path, body)
	if status != want {
		p.t.Fatalf("%s %s %s: status %d, want %d: %s", method, path, body, status, want, b)
	}
	return b
}

// fault returns the fault_message of an error answer.
func fault(t testing.TB, body string) string {
	t.Helper()
	var e struct {
		FaultMessage string `json:"fault_message"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.FaultMessage
}

// threadNames returns the thread names of the process.
func (p *proc) threadNames() []string {
	p.t.Helper()
	m, err := kunix.ThreadNames(p.cmd.Process.Pid)
	if err != nil {
		p.t.Fatalf("thread names: %v", err)
	}
	var out []string
	for _, n := range m {
		out = append(out, n)
	}
	return out
}

// waitOutput waits until the process's stdout contains s.
func (p *proc) waitOutput(s string) {
	p.t.Helper()
	waitFor(p.t, "stdout", p.stdout, s)
}

// waitStderr waits until the process's stderr contains s.
func (p *proc) waitStderr(s string) {
	p.t.Helper()
	waitFor(p.t, "stderr", p.stderr, s)
}

// waitFor waits until b contains s: the copy from the child's pipe may lag.
func waitFor(t testing.TB, what string, b *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %q after 5s: %q", what, s, b)
		}
		time.Sleep(time.Millisecond)
	}
}

// writeFile creates a file in dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// isExitError reports whether err is a process exit error.
func isExitError(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}
