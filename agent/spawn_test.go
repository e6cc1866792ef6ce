package agent_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/server"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestSpawn starts processes whose output goes to the agent's console (in
// host mode its standard output, which the test reads): the process runs
// on after Spawn returns, its output and how it ended are on the console.
func TestSpawn(t *testing.T) {
	testutil.CheckLeaks(t)
	a, c := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pid, err := c.Spawn(ctx, agent.ExecConfig{Args: []string{"sh", "-c", "echo spawned-out $GREETING; echo spawned-err >&2; exec sleep 60"},
		Env: []string{"GREETING=hi"}})
	if err != nil {
		t.Fatalf("%v; agent log:\n%s", err, a.Log())
	}
	waitLog(t, a.Log, "spawned-out hi\n", "spawned-err\n")
	// It runs on: another client finds it, and can end it.
	other := client(t, agent.Config{SocketPath: a.Socket})
	ps, err := other.Processes(ctx)
	if err != nil || len(ps) != 1 || ps[0].PID != pid {
		t.Fatalf("processes = %+v, %v; want the spawned one, %d", ps, err, pid)
	}
	att, err := other.Attach(ctx, pid, agent.AttachConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := att.Signal(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := att.Wait(ctx); err != nil || code != 128+int(syscall.SIGTERM) {
		t.Errorf("wait = %d, %v; want %d", code, err, 128+int(syscall.SIGTERM))
	}
	_ = att.Close()
	waitLog(t, a.Log, "process ended", "signal: terminated")

	// One that ends at once: its status is on the console.
	if _, err := c.Spawn(ctx, agent.ExecConfig{Args: []string{"sh", "-c", "exit 3"}}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, a.Log, "exit status 3")

	// Bad requests.
	if _, err := c.Spawn(ctx, agent.ExecConfig{Args: []string{"sh"}, Stdin: true}); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("spawn with stdin: err = %v, want ErrInvalid", err)
	}
	_, err = c.Spawn(ctx, agent.ExecConfig{Args: []string{"no-such-program"}})
	if ee := (*agent.ExecError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 127 {
		t.Errorf("spawn of a missing program: err = %v, want an ExecError with 127", err)
	}
}

// waitLog waits until log() holds every one of want.
func waitLog(t *testing.T, log func() string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := log()
		missing := ""
		for _, w := range want {
			if !strings.Contains(l, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console has no %q after 10s:\n%s", missing, l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSpawnOlderAgent: an agent that ignores the output header (as one
// older than this client does) would stream the output, and lose it once
// the client hangs up. Spawn says so (ErrNotSupported) and kills the
// process it started.
func TestSpawnOlderAgent(t *testing.T) {
	testutil.CheckLeaks(t)
	sock := filepath.Join(testutil.ShortTempDir(t), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{})
	older := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(server.OutputHeader)
		srv.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: older}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		srv.Close()
	})
	c := client(t, agent.Config{SocketPath: sock})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Spawn(ctx, agent.ExecConfig{Args: []string{"sleep", "60"}})
	if !errors.Is(err, agent.ErrNotSupported) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("Spawn on an agent without console output = %v, want ErrNotSupported saying it is older", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, err := c.Processes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process Spawn started still runs: %+v", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSpawnNoConsole: a server without a console refuses the start.
func TestSpawnNoConsole(t *testing.T) {
	testutil.CheckLeaks(t)
	c := client(t, agent.Config{SocketPath: serveInProcess(t, nil)})
	_, err := c.Spawn(context.Background(), agent.ExecConfig{Args: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "no console") {
		t.Fatalf("Spawn on an agent without a console = %v, want a refusal saying so", err)
	}
}
