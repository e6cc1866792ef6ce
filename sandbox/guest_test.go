package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// agentKernel is the kernel of a simulated guest: the fake Firecracker
// boots the root drive's init instead, so the test guest does.
func agentKernel(t *testing.T) string {
	t.Helper()
	return haltGuest(t, "not booted: the simulated guest runs init")
}

// startAgentSandbox creates and starts a sandbox whose root filesystem
// holds the real agent as its init, on the fake Firecracker's simulated
// guest, and removes it at cleanup.
func startAgentSandbox(t *testing.T, r *Runtime, fc, id string, o testutil.AgentRootOptions) Info {
	t.Helper()
	return startAgentSandboxOn(t, r, fc, id, testutil.AgentRootfs(t, o))
}

// startAgentSandboxOn is startAgentSandbox with the image given.
func startAgentSandboxOn(t *testing.T, r *Runtime, fc, id, img string) Info {
	t.Helper()
	ctx := context.Background()
	_, err := r.Create(ctx, Spec{ID: id, Kernel: agentKernel(t), KernelArgs: testutil.AgentBootArgs, Firecracker: fc,
		Rootfs: &Disk{Path: img}, MemoryMiB: 64}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), id, true); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("remove %s: %v", id, err)
		}
	})
	in, err := r.Start(ctx, id)
	if err != nil {
		dir, _ := r.st.Dir(id)
		var b strings.Builder
		copyLog(filepath.Join(dir, consoleName), &b)
		fcLog, _ := os.ReadFile(filepath.Join(dir, fcLogName))
		t.Fatalf("%v\nconsole:\n%s\nfirecracker log:\n%s", err, b.String(), fcLog)
	}
	return in
}

// run runs a command in the sandbox and returns its exit code and output.
func run(t *testing.T, g Guest, id string, req ExecRequest) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	req.Stdout, req.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := g.Exec(ctx, id, req)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Args, err)
	}
	defer p.Close()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %q: %v", req.Args, err)
	}
	return code, out.String(), errb.String()
}

// TestGuestEndToEnd boots the real agent as the init of a simulated guest
// through the runtime, and runs a command and moves a file through
// package agent over the real hybrid-vsock handshake.
func TestGuestEndToEnd(t *testing.T) {
	testutil.NeedSimulatedGuest(t)
	r, fc := newRuntime(t, false)
	in := startAgentSandbox(t, r, fc, "e2e_1", testutil.AgentRootOptions{})
	if !in.Spec.Agent || in.Spec.VsockCID != DefaultAgentCID || in.VsockSocket == "" {
		t.Fatalf("agent sandbox: agent %v, vsock cid %d, socket %q", in.Spec.Agent, in.Spec.VsockCID, in.VsockSocket)
	}
	code, out, _ := run(t, r, in.ID, ExecRequest{Args: []string{"sh", "-c", "echo hello from $(hostname); exit 3"}})
	if code != 3 || out != "hello from e2e-1\n" {
		t.Fatalf("exec: code %d, output %q; want 3, %q", code, out, "hello from e2e-1\n")
	}
	ctx := context.Background()
	if err := r.PutFile(ctx, in.ID, "/srv/in.txt", strings.NewReader("payload"), FileOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, err := r.GetFile(ctx, in.ID, "/srv/in.txt", FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "payload" {
		t.Fatalf("get file: %q, %v", b, err)
	}

	// The token: a 0600 file of the sandbox directory, in neither the
	// state file nor Inspect.
	fi, err := os.Stat(filepath.Join(in.Dir, tokenName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	tok, err := readSecret(in.Dir, tokenName)
	if err != nil || len(tok) != 64 {
		t.Fatalf("token: %d bytes, %v", len(tok), err)
	}
	state, err := os.ReadFile(filepath.Join(in.Dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := r.Inspect(ctx, in.ID)
	js, _ := json.Marshal(got)
	if bytes.Contains(state, []byte(tok)) || bytes.Contains(js, []byte(tok)) {
		t.Fatal("the access token is in the state file or in Inspect")
	}
	// The agent wants it: a client without it is refused.
	c, err := agent.New(agent.Config{VsockPath: in.VsockSocket})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Stat(ctx, "/", agent.FileOptions{}); !errors.Is(err, agent.ErrAccessDenied) {
		t.Fatalf("stat without the token: %v, want ErrAccessDenied", err)
	}
}
