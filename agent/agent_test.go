package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/internal/agenttest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	agenttest.Cleanup()
	os.Exit(code)
}

// setup starts an agent in host mode and returns a client for it.
func setup(t *testing.T) (*agenttest.Agent, *agent.Client) {
	t.Helper()
	a := agenttest.Start(t, agenttest.Options{})
	return a, client(t, agent.Config{SocketPath: a.Socket})
}

func client(t *testing.T, cfg agent.Config) *agent.Client {
	t.Helper()
	c, err := agent.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dial agent: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// run executes args and returns stdout, stderr and the exit code.
func run(t *testing.T, c *agent.Client, ec agent.ExecConfig) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ec.Stdout, ec.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := c.Exec(ctx, ec)
	if err != nil {
		t.Fatalf("exec %q: %v", ec.Args, err)
	}
	defer p.Close()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %q: %v", ec.Args, err)
	}
	return out.String(), errb.String(), code
}

func TestExecExitCodes(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"true", []string{"true"}, 0, ""},
		{"false", []string{"false"}, 1, ""},
		{"exit 7", []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, 7, "out\n"},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, code := run(t, c, agent.ExecConfig{Args: tc.args})
			if code != tc.code || out != tc.out {
				t.Errorf("exec %q = (%q, %d), want (%q, %d)", tc.args, out, code, tc.out, tc.code)
			}
		})
	}
	for _, tc := range []struct {
		name     string
		cmd      string
		code     int
		sentinel error
	}{
		{"not found in PATH", "no-such-command-kindling", 127, agent.ErrNotFound},
		{"no such path", "/no/such/file", 127, agent.ErrNotFound},
		{"not executable", notExec, 126, agent.ErrInvalid},
		{"a directory", dir, 126, agent.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Exec(context.Background(), agent.ExecConfig{Args: []string{tc.cmd}})
			var ee *agent.ExecError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !errors.Is(err, tc.sentinel) {
				t.Fatalf("exec %q: err = %v, want an ExecError with exit code %d matching %v", tc.cmd, err, tc.code, tc.sentinel)
			}
		})
	}
}

func TestExecStdin(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"sh", "-c", "cat; echo done"}, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go func() {
		for i := range 3 {
			fmt.Fprintf(p.Stdin, "line %d\n", i)
		}
		_ = p.Stdin.Close()
	}()
	go func() { _, _ = io.Copy(io.Discard, p.Stderr) }()
	out, err := io.ReadAll(p.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("wait = %d, %v", code, err)
	}
	if want := "line 0\nline 1\nline 2\ndone\n"; string(out) != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
}

func TestExecTTY(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	var out testutil.SyncBuffer
	p, err := c.Exec(ctx, agent.ExecConfig{
		Args: []string{"sh", "-c", "tty; stty size; read line; stty size; echo got $line"},
		TTY:  true, Rows: 30, Cols: 100, Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitFor(t, &out, "30 100")
	if err := p.Resize(ctx, 40, 120); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if _, err := io.WriteString(p.Stdin, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("wait = %d, %v; output %q", code, err, out.String())
	}
	for _, want := range []string{"/dev/pts/", "30 100", "40 120", "got hello"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("terminal output %q lacks %q", out.String(), want)
		}
	}
}

func waitFor(t *testing.T, b *testutil.SyncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q lacks %q after 10s", b.String(), s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExecEnvDirUser(t *testing.T) {
	testutil.CheckLeaks(t)
	a := agenttest.Start(t, agenttest.Options{ImageConfig: `{"env":["IMG=image","FOO=from-image"],"working_dir":"/tmp"}`})
	c := client(t, agent.Config{SocketPath: a.Socket})
	out, _, code := run(t, c, agent.ExecConfig{Args: []string{"sh", "-c", `echo "$IMG $FOO"; pwd`}, Env: []string{"FOO=bar"}})
	if want := "image bar\n/tmp\n"; out != want || code != 0 {
		t.Errorf("image defaults: output %q (exit %d), want %q", out, code, want)
	}
	dir := t.TempDir()
	out, _, _ = run(t, c, agent.ExecConfig{Args: []string{"pwd"}, Dir: dir})
	if out != dir+"\n" {
		t.Errorf("pwd in %s = %q", dir, out)
	}
	_, err := c.Exec(context.Background(), agent.ExecConfig{Args: []string{"true"}, Dir: "/no/such/dir"})
	if !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("exec in a missing dir: err = %v, want ErrInvalid", err)
	}
	_, err = c.Exec(context.Background(), agent.ExecConfig{Args: []string{"true"}, User: "no-such-user-kindling"})
	if !errors.Is(err, agent.ErrAccessDenied) {
		t.Errorf("exec as a missing user: err = %v, want ErrAccessDenied", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root")
	}
	out, _, _ = run(t, c, agent.ExecConfig{Args: []string{"sh", "-c", "id -u; echo $USER $HOME"}, User: "nobody"})
	if !strings.HasPrefix(out, "65534\nnobody ") {
		t.Errorf("exec as nobody: output %q, want uid 65534 and USER=nobody", out)
	}
	// The default user ("user", as E2B's) does not exist here: root.
	out, _, _ = run(t, c, agent.ExecConfig{Args: []string{"id", "-u"}})
	if out != "0\n" {
		t.Errorf("exec as the default user on a host without %q: uid %q, want 0 (root fallback)", "user", out)
	}
	// The image's user is the default.
	a2 := agenttest.Start(t, agenttest.Options{ImageConfig: `{"user":"nobody"}`})
	c2 := client(t, agent.Config{SocketPath: a2.Socket})
	out, _, _ = run(t, c2, agent.ExecConfig{Args: []string{"id", "-un"}})
	if out != "nobody\n" {
		t.Errorf("exec with the image's user nobody: %q", out)
	}
}

func TestExecSignal(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	var out testutil.SyncBuffer
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"sh", "-c", "trap 'echo got INT; exit 3' INT; echo ready; while :; do sleep 0.01; done"}, Stdout: &out, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitFor(t, &out, "ready")
	if err := p.Signal(ctx, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 3 {
		t.Fatalf("wait after SIGINT = %d, %v; want 3", code, err)
	}
	if !strings.Contains(out.String(), "got INT") {
		t.Errorf("output %q: the trap did not run", out.String())
	}
	if err := p.Signal(ctx, syscall.SIGTERM); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("signal an ended process: err = %v, want ErrNotFound", err)
	}

	p2, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"sleep", "100"}, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if err := p2.Signal(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err := p2.WaitStatus(ctx)
	if err != nil || st.Code != 137 || st.Signal != syscall.SIGKILL {
		t.Fatalf("wait after SIGKILL = %+v, %v; want code 137, SIGKILL", st, err)
	}
}

func TestExecConcurrent(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"sh", "-c", fmt.Sprintf("sleep 0.05; echo %d; exit %d", i, i)}, Stdout: &out, Stderr: io.Discard})
			if err != nil {
				errs <- err
				return
			}
			defer p.Close()
			code, err := p.Wait(ctx)
			if err != nil || code != i || out.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("exec %d: code %d, output %q, err %v", i, code, out.String(), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Cancelling the Exec context kills the process.
func TestExecContextCancel(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"sleep", "100"}, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	code, err := p.Wait(wctx)
	if !errors.Is(err, context.Canceled) || code != 137 {
		t.Fatalf("wait after cancel = %d, %v; want 137 and context.Canceled", code, err)
	}
}

// A background child that keeps the output open does not keep Wait from
// returning once the process itself has ended.
func TestExecBackgroundChild(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	start := time.Now()
	out, _, code := run(t, c, agent.ExecConfig{Args: []string{"sh", "-c", "sleep 1 & echo started"}})
	if out != "started\n" || code != 0 {
		t.Errorf("exec = %q, %d", out, code)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("wait took %v: it waited for the background child", d)
	}
}

// A process started by one client can be listed and attached to by
// another; detaching leaves it running.
func TestAttach(t *testing.T) {
	testutil.CheckLeaks(t)
	a, c := setup(t)
	ctx := context.Background()
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"sh", "-c", "read x; echo got $x; exit 4"}, Stdin: true, Tag: "job", Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	other := client(t, agent.Config{SocketPath: a.Socket})
	ps, err := other.Processes(ctx)
	if err != nil || len(ps) != 1 || ps[0].PID != p.PID || ps[0].Tag != "job" || ps[0].Args[0] != "sh" {
		t.Fatalf("processes = %+v, %v", ps, err)
	}
	// Attach, detach: the process goes on.
	actx, acancel := context.WithCancel(ctx)
	first, err := other.Attach(actx, p.PID, agent.AttachConfig{Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	acancel()
	if _, err := first.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait of a detached handle: err = %v, want context.Canceled", err)
	}
	_ = first.Close()
	var out testutil.SyncBuffer
	att, err := other.Attach(ctx, p.PID, agent.AttachConfig{Stdin: true, Stdout: &out, Stderr: io.Discard})
	if err != nil {
		t.Fatalf("attach after detach: %v", err)
	}
	defer att.Close()
	if _, err := io.WriteString(att.Stdin, "hi\n"); err != nil {
		t.Fatal(err)
	}
	if code, err := att.Wait(ctx); err != nil || code != 4 {
		t.Fatalf("attached wait = %d, %v", code, err)
	}
	if out.String() != "got hi\n" {
		t.Errorf("attached output %q", out.String())
	}
	if code, err := p.Wait(ctx); err != nil || code != 4 {
		t.Errorf("starter's wait = %d, %v", code, err)
	}
	if _, err := other.Attach(ctx, 999999, agent.AttachConfig{}); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("attach to a missing pid: err = %v, want ErrNotFound", err)
	}
}
