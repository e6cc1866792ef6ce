// Package agenttest runs kindling's guest agent on the host for tests: the
// real kindling-agent binary, built once per test process, in host mode
// (--listen unix:PATH), and a stand-in for Firecracker's hybrid vsock that
// speaks its CONNECT/OK handshake in front of it.
//
// Set AGENTTEST_DEBUG=1 to have each agent's log printed when it stops.
//
// It is imported by the tests of package agent only.
package agenttest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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
)

// build holds the once-per-process build of the agent.
var build struct {
	mu   sync.Mutex // guards the fields below
	dir  string
	path string
	err  error
	done bool
}

// Cleanup removes the build directory; call it from TestMain after m.Run.
func Cleanup() {
	build.mu.Lock()
	defer build.mu.Unlock()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
}

// Binary returns the kindling-agent executable, built (CGO_ENABLED=0, as
// it ships) once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	build.mu.Lock()
	defer build.mu.Unlock()
	if !build.done {
		build.done = true
		build.path, build.err = buildAgent()
	}
	if build.err != nil {
		t.Fatalf("build kindling-agent: %v", build.err)
	}
	return build.path
}

func buildAgent() (string, error) {
	root, err := testutil.ModuleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := gotool.Path()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "kindling-agent-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	out := filepath.Join(dir, "kindling-agent")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/kindling-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kindling-agent: %w\n%s", err, b)
	}
	return out, nil
}

// Agent is a running agent process.
type Agent struct {
	Socket string // its Unix socket
	Cmd    *exec.Cmd
	log    *testutil.SyncBuffer
	done   chan struct{}
}

// Options configure Start.
type Options struct {
	// ImageConfig is written to a file passed as --image-config.
	ImageConfig string
	// PID1 runs the agent as the init of new PID, mount, UTS, IPC and
	// network namespaces (root only), so that it does its PID-1 duties
	// without touching the host. Its socket is then under /var/tmp, which
	// the agent never mounts over.
	PID1 bool
}

// Start runs an agent in host mode in a fresh directory and waits until
// its socket accepts connections. It is stopped at test cleanup.
func Start(t testing.TB, o Options) *Agent {
	t.Helper()
	bin := Binary(t)
	dir := testutil.ShortTempDir(t)
	if o.PID1 {
		var err error
		if dir, err = os.MkdirTemp("/var/tmp", "kd"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	a := &Agent{Socket: filepath.Join(dir, "agent.sock"), log: &testutil.SyncBuffer{}, done: make(chan struct{})}
	args := []string{"--listen", "unix:" + a.Socket, "--log-level", "debug"}
	img := filepath.Join(dir, "image.json")
	if o.ImageConfig != "" {
		if err := os.WriteFile(img, []byte(o.ImageConfig), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args = append(args, "--image-config", img)
	a.Cmd = exec.Command(bin, args...)
	a.Cmd.Stdout, a.Cmd.Stderr = a.log, a.log
	if o.PID1 {
		a.Cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:   syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
			Unshareflags: syscall.CLONE_NEWNS, // and / made private: no mount leaks out
			Pdeathsig:    syscall.SIGKILL,
		}
	}
	if err := a.Cmd.Start(); err != nil {
		if o.PID1 && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC)) {
			t.Skipf("cannot create the namespaces for a PID-1 agent here (a container without CAP_SYS_ADMIN?): %v", err)
		}
		t.Fatalf("start agent: %v", err)
	}
	go func() { _ = a.Cmd.Wait(); close(a.done) }()
	t.Cleanup(func() { a.Stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", a.Socket)
		if err == nil {
			_ = c.Close()
			return a
		}
		select {
		case <-a.done:
			t.Fatalf("agent exited before serving: %s", a.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent socket %s not ready after 10s: %s", a.Socket, a.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Log returns what the agent has logged so far.
func (a *Agent) Log() string { return a.log.String() }

// Done is closed when the agent process has exited.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Kill kills the agent with SIGKILL (its processes are left to die of a
// broken pipe) and waits for it.
func (a *Agent) Kill() {
	_ = a.Cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
}

// Stop asks the agent to stop (SIGTERM: it kills what it started) and
// waits; after 5 s it kills it.
func (a *Agent) Stop(t testing.TB) {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.Cmd.Process.Signal(syscall.SIGTERM)
	t0 := time.Now()
	defer func() {
		if os.Getenv("AGENTTEST_DEBUG") != "" {
			t.Logf("agent stop took %v; log:\n%s", time.Since(t0), a.Log())
		}
	}()
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		t.Errorf("agent did not stop on SIGTERM within 5s; killing it")
		a.Kill()
	}
}

// Bridge is a stand-in for Firecracker's hybrid vsock: a Unix socket on
// which a connection starts with "CONNECT <port>\n"; for Port it answers
// "OK <n>\n" and splices the connection to the agent's socket, for other
// ports it closes the connection, as Firecracker does when nothing listens.
type Bridge struct {
	Path  string
	Port  uint32
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
}

// NewBridge serves a bridge to target, closed at test cleanup. With
// silent set it accepts connections and never answers (a guest that hangs).
func NewBridge(t testing.TB, target string, port uint32, silent bool) *Bridge {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	b := &Bridge{Path: filepath.Join(dir, "v.sock"), Port: port, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("unix", b.Path)
	if err != nil {
		t.Fatal(err)
	}
	b.ln = ln
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !b.track(c) {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer b.untrack(c)
				if silent {
					_, _ = io.Copy(io.Discard, c)
					return
				}
				b.serve(c, target)
			}()
		}
	}()
	t.Cleanup(b.Close)
	return b
}

func (b *Bridge) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		_ = c.Close()
		return false
	}
	b.conns[c] = true
	return true
}

func (b *Bridge) untrack(c net.Conn) {
	_ = c.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
}

func (b *Bridge) serve(c net.Conn, target string) {
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "CONNECT ")
	if !ok || port != strconv.FormatUint(uint64(b.Port), 10) {
		return
	}
	g, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	defer g.Close()
	if _, err := io.WriteString(c, "OK 1073741824\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(g, r)
		if uc, ok := g.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(c, g)
	_ = c.Close()
	<-done
}

// Close stops the bridge and its connections.
func (b *Bridge) Close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
	b.wg.Wait()
}
