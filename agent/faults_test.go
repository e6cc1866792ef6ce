package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/internal/agenttest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// Once /init set a token, requests without it are refused with 401.
func TestAccessToken(t *testing.T) {
	testutil.CheckLeaks(t)
	a, c := setup(t)
	ctx := context.Background()
	const token = "s3cret-token-kindling-4242"
	if err := c.Init(ctx, agent.InitConfig{AccessToken: token}); err != nil {
		t.Fatalf("init: %v", err)
	}
	// The client that set it uses it.
	if out, _, code := run(t, c, agent.ExecConfig{Args: []string{"echo", "ok"}}); out != "ok\n" || code != 0 {
		t.Fatalf("exec with the token: %q, %d", out, code)
	}
	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"wrong token", "wrong"}} {
		t.Run(tc.name, func(t *testing.T) {
			other := client(t, agent.Config{SocketPath: a.Socket, AccessToken: tc.token})
			if _, err := other.Exec(ctx, agent.ExecConfig{Args: []string{"true"}}); !errors.Is(err, agent.ErrAccessDenied) {
				t.Errorf("exec: err = %v, want ErrAccessDenied", err)
			}
			if _, err := other.GetFile(ctx, "/etc/hostname", agent.FileOptions{}); !errors.Is(err, agent.ErrAccessDenied) {
				t.Errorf("get file: err = %v, want ErrAccessDenied", err)
			}
			if _, err := other.Stat(ctx, "/", agent.FileOptions{}); !errors.Is(err, agent.ErrAccessDenied) {
				t.Errorf("stat: err = %v, want ErrAccessDenied", err)
			}
			if err := other.Init(ctx, agent.InitConfig{AccessToken: "mine-now"}); !errors.Is(err, agent.ErrAccessDenied) {
				t.Errorf("init taking over: err = %v, want ErrAccessDenied", err)
			}
			// /health stays open.
			if err := other.Health(ctx); err != nil {
				t.Errorf("health: %v", err)
			}
			// The wire answer is 401, as envd's.
			hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", a.Socket)
			}}}
			defer hc.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, "http://agent/filesystem.Filesystem/Stat", strings.NewReader(`{"path":"/"}`))
			req.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				req.Header.Set("X-Access-Token", tc.token)
			}
			res, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode != http.StatusUnauthorized {
				t.Errorf("raw stat: status %d, want 401", res.StatusCode)
			}
		})
	}
	// A re-init with the current token replaces it.
	if err := c.Init(ctx, agent.InitConfig{AccessToken: "second-token-kindling"}); err != nil {
		t.Fatalf("re-init: %v", err)
	}
	if _, err := client(t, agent.Config{SocketPath: a.Socket, AccessToken: token}).Stat(ctx, "/", agent.FileOptions{}); !errors.Is(err, agent.ErrAccessDenied) {
		t.Errorf("old token after re-init: err = %v, want ErrAccessDenied", err)
	}
	for _, tok := range []string{token, "second-token-kindling"} {
		if strings.Contains(a.Log(), tok) {
			t.Errorf("the agent logged the access token %q", tok)
		}
	}
}

// Init sets the default environment of later processes.
func TestInitEnv(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	if err := c.Init(context.Background(), agent.InitConfig{Env: map[string]string{"KINDLING_X": "one"}}); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := run(t, c, agent.ExecConfig{Args: []string{"sh", "-c", "echo $KINDLING_X"}}); out != "one\n" {
		t.Errorf("env after init: %q", out)
	}
}

// An agent killed while a process streams output: the stream ends with a
// clear error instead of hanging.
func TestAgentKilledMidStream(t *testing.T) {
	testutil.CheckLeaks(t)
	a, c := setup(t)
	ctx := context.Background()
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"yes", "kindling"}, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := io.ReadFull(p.Stdout, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	a.Kill()
	readErr := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, p.Stdout); readErr <- err }()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = p.Wait(wctx)
	if !errors.Is(err, agent.ErrUnavailable) || !strings.Contains(err.Error(), a.Socket) {
		t.Fatalf("wait after the agent died: err = %v, want ErrUnavailable naming %s", err, a.Socket)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, agent.ErrUnavailable) {
			t.Errorf("stdout after the agent died: err = %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stdout still open 10s after the agent died")
	}
	if _, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"true"}}); !errors.Is(err, agent.ErrUnavailable) {
		t.Errorf("exec on a dead agent: err = %v, want ErrUnavailable", err)
	}
}

// A guest that accepts connections and never answers: a timeout naming the
// socket, not a hang.
func TestNeverAnswering(t *testing.T) {
	testutil.CheckLeaks(t)
	t.Run("unix", func(t *testing.T) {
		dir := testutil.ShortTempDir(t)
		sock := filepath.Join(dir, "silent.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		conns := make(chan net.Conn, 16)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					close(conns)
					return
				}
				conns <- c
			}
		}()
		defer func() {
			_ = ln.Close()
			for c := range conns {
				_ = c.Close()
			}
		}()
		start := time.Now()
		_, err = agent.Dial(context.Background(), agent.Config{SocketPath: sock, RequestTimeout: 300 * time.Millisecond})
		if !errors.Is(err, agent.ErrUnavailable) || !strings.Contains(err.Error(), sock) {
			t.Fatalf("dial a silent agent: err = %v, want ErrUnavailable naming %s", err, sock)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v to give up", d)
		}
	})
	t.Run("vsock", func(t *testing.T) {
		b := agenttest.NewBridge(t, "", agent.Port, true)
		_, err := agent.Dial(context.Background(), agent.Config{VsockPath: b.Path, DialTimeout: 300 * time.Millisecond})
		if !errors.Is(err, agent.ErrUnavailable) || !strings.Contains(err.Error(), b.Path) || !strings.Contains(err.Error(), "CONNECT") {
			t.Fatalf("dial a silent vsock: err = %v, want ErrUnavailable naming %s and the handshake", err, b.Path)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "none.sock")
		_, err := agent.Dial(context.Background(), agent.Config{VsockPath: sock})
		if !errors.Is(err, agent.ErrUnavailable) || !strings.Contains(err.Error(), sock) {
			t.Fatalf("dial a missing socket: err = %v, want ErrUnavailable naming it", err)
		}
	})
}

// Through a stand-in for Firecracker's hybrid vsock, the client does the
// CONNECT/OK handshake and then speaks to the agent.
func TestHybridVsock(t *testing.T) {
	testutil.CheckLeaks(t)
	a := agenttest.Start(t, agenttest.Options{})
	b := agenttest.NewBridge(t, a.Socket, agent.Port, false)
	c := client(t, agent.Config{VsockPath: b.Path})
	if out, _, code := run(t, c, agent.ExecConfig{Args: []string{"echo", "through vsock"}}); out != "through vsock\n" || code != 0 {
		t.Fatalf("exec through vsock: %q, %d", out, code)
	}
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "f")
	if err := c.PutFile(ctx, p, bytes.NewReader([]byte("data")), agent.FileOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := c.GetFile(ctx, p, agent.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	_ = r.Close()
	if string(got) != "data" {
		t.Errorf("file through vsock: %q", got)
	}
	// A port nothing listens on: Firecracker closes the connection.
	_, err = agent.Dial(ctx, agent.Config{VsockPath: b.Path, Port: 1234})
	if !errors.Is(err, agent.ErrUnavailable) || !strings.Contains(err.Error(), "port 1234") {
		t.Errorf("dial an unanswered port: err = %v, want ErrUnavailable naming the port", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  agent.Config
	}{
		{"nothing", agent.Config{}},
		{"both", agent.Config{VsockPath: "/a", SocketPath: "/b"}},
		{"long path", agent.Config{VsockPath: "/" + strings.Repeat("x", 120)}},
		{"negative timeout", agent.Config{VsockPath: "/a", DialTimeout: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.New(tc.cfg); !errors.Is(err, agent.ErrInvalid) {
				t.Errorf("New(%+v): err = %v, want ErrInvalid", tc.cfg, err)
			}
		})
	}
}
