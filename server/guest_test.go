package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/server"
)

// startAgentSandbox boots, through the server's runtime, a simulated
// guest whose init is the real agent (busybox for the commands), waits
// for the agent and removes the sandbox at cleanup.
func (r *rig) startAgentSandbox(t *testing.T, id string) sandbox.Info {
	t.Helper()
	testutil.NeedSimulatedGuest(t)
	ctx := context.Background()
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{})
	_, err := r.rt.Create(ctx, sandbox.Spec{ID: id, Kernel: haltGuest(t, emulatedMark), KernelArgs: testutil.AgentBootArgs,
		Firecracker: r.fc, Rootfs: &sandbox.Disk{Path: img}, MemoryMiB: 64, VsockCID: 3}, sandbox.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		if err := r.rt.Remove(context.Background(), id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("remove %s: %v", id, err)
		}
	})
	in, err := r.rt.Start(ctx, id)
	if err != nil {
		con, _ := os.ReadFile(in.ConsoleLog)
		t.Fatalf("start %s: %v\n%s", id, err, con)
	}
	c, err := agent.New(agent.Config{VsockPath: in.VsockSocket})
	must(t, err)
	defer c.Close()
	waitFor(t, "the agent", func() bool { return c.Health(ctx) == nil })
	return in
}

// execOut runs args in sandbox id through g and returns its exit code and
// output.
func execOut(t *testing.T, g sandbox.Guest, id string, req sandbox.ExecRequest) (int, string, string) {
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

// The native API's guest calls, through the remote client, against the
// real agent of a simulated guest (what a simulated guest may prove: the
// host side end to end and the agent's behaviour).
func TestGuestThroughServer(t *testing.T) {
	r := newRig(t, server.Config{Domain: "sbx.test"})
	in := r.startAgentSandbox(t, "g1")
	id := in.ID
	c := r.client
	ctx := context.Background()

	t.Run("exec output and exit codes", func(t *testing.T) {
		code, out, errs := execOut(t, c, id, sandbox.ExecRequest{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
		if code != 3 || out != "out\n" || errs != "err\n" {
			t.Errorf("got code %d stdout %q stderr %q, want 3 %q %q", code, out, errs, "out\n", "err\n")
		}
		code, out, _ = execOut(t, c, id, sandbox.ExecRequest{Args: []string{"sh", "-c", "echo $GREETING; pwd; id -u"}, Env: []string{"GREETING=hi"}, Dir: "/tmp", User: "user"})
		if code != 0 || out != "hi\n/tmp\n1000\n" {
			t.Errorf("env, dir, user: code %d output %q", code, out)
		}
	})
	t.Run("missing program is 127", func(t *testing.T) {
		_, err := c.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"no-such-program"}})
		var ee *agent.ExecError
		if !errors.As(err, &ee) || ee.ExitCode() != 127 || !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("exec of a missing program: %v, want an ExecError with code 127", err)
		}
	})
	t.Run("stdin and pipes", func(t *testing.T) {
		p, err := c.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"sh", "-c", "wc -c; echo done >&2"}, Stdin: true})
		must(t, err)
		defer p.Close()
		data := bytes.Repeat([]byte("x"), 100<<10) // more than one message
		go func() {
			_, _ = p.Stdin().Write(data)
			_ = p.Stdin().Close()
		}()
		errc := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(p.Stderr()); errc <- b }()
		out, err := io.ReadAll(p.Stdout())
		must(t, err)
		if got := strings.TrimSpace(string(out)); got != "102400" {
			t.Errorf("wc -c of 100 KiB read %q", got)
		}
		if e := <-errc; string(e) != "done\n" {
			t.Errorf("stderr %q", e)
		}
		if code, err := p.Wait(ctx); code != 0 || err != nil {
			t.Errorf("wait: %d, %v", code, err)
		}
	})
	t.Run("signal", func(t *testing.T) {
		p, err := c.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"sleep", "30"}, Stdout: io.Discard, Stderr: io.Discard})
		must(t, err)
		defer p.Close()
		if p.PID() == 0 {
			t.Error("no PID")
		}
		must(t, p.Signal(ctx, syscall.SIGTERM))
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if code, err := p.Wait(wctx); code != 128+15 || err != nil {
			t.Errorf("after SIGTERM: %d, %v, want 143", code, err)
		}
		if err := p.Signal(ctx, syscall.SIGTERM); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("signal after the end: %v, want ErrNotFound", err)
		}
	})
	t.Run("tty", func(t *testing.T) {
		code, out, _ := execOut(t, c, id, sandbox.ExecRequest{Args: []string{"stty", "size"}, TTY: true, Rows: 33, Cols: 99})
		if code != 0 || strings.TrimSpace(out) != "33 99" {
			t.Errorf("stty size on a 33x99 terminal: %d %q", code, out)
		}
	})
	t.Run("close kills", func(t *testing.T) {
		p, err := c.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"sh", "-c", "echo started; exec sleep 1234"}})
		must(t, err)
		line := make([]byte, 8)
		_, err = io.ReadFull(p.Stdout(), line)
		must(t, err)
		must(t, p.Close())
		waitFor(t, "the process to be killed", func() bool {
			code, _, _ := execOut(t, c, id, sandbox.ExecRequest{Args: []string{"pidof", "sleep"}})
			return code != 0
		})
	})
	t.Run("files", func(t *testing.T) {
		o := sandbox.FileOptions{}
		data := make([]byte, 200<<10+7)
		_, _ = rand.Read(data)
		must(t, c.PutFile(ctx, id, "/tmp/d/e/blob", bytes.NewReader(data), o))
		rc, err := c.GetFile(ctx, id, "/tmp/d/e/blob", o)
		must(t, err)
		got, err := io.ReadAll(rc)
		must(t, err)
		must(t, rc.Close())
		if !bytes.Equal(got, data) {
			t.Errorf("read back %d bytes, differing from the %d written", len(got), len(data))
		}
		must(t, c.PutFile(ctx, id, "/tmp/d/empty", strings.NewReader(""), o))
		if rc, err := c.GetFile(ctx, id, "/tmp/d/empty", o); err != nil {
			t.Errorf("get an empty file: %v", err)
		} else if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
			t.Errorf("empty file read %q, %v", b, err)
		} else {
			must(t, rc.Close())
		}
		fi, err := c.StatFile(ctx, id, "/tmp/d/e/blob", o)
		must(t, err)
		if fi.Type != sandbox.TypeFile || fi.Size != int64(len(data)) || fi.Name != "blob" || fi.ModTime.IsZero() {
			t.Errorf("stat: %+v", fi)
		}
		must(t, c.Chmod(ctx, id, "/tmp/d/e/blob", 0o600, o))
		if fi, err := c.StatFile(ctx, id, "/tmp/d/e/blob", o); err != nil || fi.Mode != 0o600 {
			t.Errorf("after chmod 600: %v, %v", fi.Mode, err)
		}
		must(t, c.MakeDir(ctx, id, "/tmp/d/made/deep", o))
		if err := c.MakeDir(ctx, id, "/tmp/d/made/deep", o); !errors.Is(err, sandbox.ErrExists) {
			t.Errorf("make an existing directory: %v, want ErrExists", err)
		}
		fis, err := c.ListDir(ctx, id, "/tmp/d", 2, o)
		must(t, err)
		names := map[string]sandbox.FileType{}
		for _, fi := range fis {
			names[fi.Path] = fi.Type
		}
		for p, typ := range map[string]sandbox.FileType{"/tmp/d/e": sandbox.TypeDir, "/tmp/d/e/blob": sandbox.TypeFile, "/tmp/d/made/deep": sandbox.TypeDir} {
			if names[p] != typ {
				t.Errorf("list depth 2: %s is %v in %v", p, names[p], names)
			}
		}
		must(t, c.RemoveFile(ctx, id, "/tmp/d", o))
		if _, err := c.StatFile(ctx, id, "/tmp/d/e/blob", o); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("stat after remove: %v, want ErrNotFound", err)
		}
		if _, err := c.GetFile(ctx, id, "/no/such", o); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("get a missing file: %v, want ErrNotFound", err)
		}
		must(t, c.PutFile(ctx, id, "/tmp/owned", strings.NewReader("x"), sandbox.FileOptions{User: "user"}))
		if fi, err := c.StatFile(ctx, id, "/tmp/owned", o); err != nil || fi.Owner != "user" {
			t.Errorf("a file put as user: owner %q, %v", fi.Owner, err)
		}
	})
	t.Run("watch", func(t *testing.T) {
		o := sandbox.FileOptions{}
		must(t, c.MakeDir(ctx, id, "/tmp/w", o))
		w, err := c.WatchDir(ctx, id, "/tmp/w", false, o)
		must(t, err)
		must(t, c.PutFile(ctx, id, "/tmp/w/new", strings.NewReader("x"), o))
		timeout := time.After(10 * time.Second)
		for seen := false; !seen; {
			select {
			case ev, ok := <-w.Events():
				if !ok {
					t.Fatalf("watch ended: %v", w.Err())
				}
				seen = ev.Name == "new" && ev.Type == agent.EventCreate
			case <-timeout:
				t.Fatal("no create event for /tmp/w/new")
			}
		}
		w.Close()
		if err := w.Err(); err != nil {
			t.Errorf("after Close: %v", err)
		}
	})
	t.Run("port forward", func(t *testing.T) {
		// A free port (the simulated guest may share the host's loopback).
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		must(t, l.Close())
		must(t, c.PutFile(ctx, id, "/tmp/www/index.html", strings.NewReader("hello from the guest\n"), sandbox.FileOptions{}))
		p, err := c.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"busybox", "httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", port), "-h", "/tmp/www"},
			Stdout: io.Discard, Stderr: io.Discard})
		must(t, err)
		defer p.Close()
		get := func(host string, hdr map[string]string) (int, string) {
			req, err := http.NewRequest("GET", r.url+"/index.html", nil)
			must(t, err)
			req.Host = host
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			must(t, err)
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(b)
		}
		host := fmt.Sprintf("%d-%s.sbx.test", port, id)
		waitFor(t, "the guest's HTTP server through the proxy", func() bool {
			code, _ := get(host, nil)
			return code == 200
		})
		for i := range 3 { // kept-alive and new connections alike
			if code, body := get(host, nil); code != 200 || body != "hello from the guest\n" {
				t.Errorf("GET %d through %s: %d %q", i, host, code, body)
			}
		}
		if code, body := get("127.0.0.1", map[string]string{"E2b-Sandbox-Id": id, "E2b-Sandbox-Port": strconv.Itoa(port)}); code != 200 || body != "hello from the guest\n" {
			t.Errorf("GET with E2B's sandbox headers: %d %q", code, body)
		}
		must(t, p.Close())
		waitFor(t, "the port to close", func() bool {
			code, body := get(host, nil)
			return code == 502 && strings.Contains(body, "port_not_forwarded")
		})
	})
	t.Run("errors", func(t *testing.T) {
		if _, err := c.Exec(ctx, "nosuch", sandbox.ExecRequest{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("exec in a missing sandbox: %v, want ErrNotFound", err)
		}
		if _, err := c.Exec(ctx, id, sandbox.ExecRequest{}); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("exec of nothing: %v, want ErrInvalid", err)
		}
		if _, err := c.StatFile(ctx, id, "", sandbox.FileOptions{}); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("stat of no path: %v, want ErrInvalid", err)
		}
		must(t, c.Pause(ctx, id))
		_, err := c.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"true"}})
		must(t, c.Resume(ctx, id))
		if !errors.Is(err, sandbox.ErrConflict) {
			t.Errorf("exec in a paused sandbox: %v, want ErrConflict", err)
		}
	})
}

// A sandbox without a vsock device has no agent to reach: the guest
// calls say so at once.
func TestGuestWithoutAgent(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	_, err := r.client.Create(ctx, r.idleSpec("plain"), sandbox.CreateOptions{})
	must(t, err)
	defer func() { must(t, r.client.Remove(ctx, "plain", true)) }()
	_, err = r.client.Start(ctx, "plain")
	must(t, err)
	if _, err := r.client.Exec(ctx, "plain", sandbox.ExecRequest{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("exec without an agent: %v, want ErrNotSupported", err)
	}
	if err := r.client.PutFile(ctx, "plain", "/x", strings.NewReader("x"), sandbox.FileOptions{}); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("put file without an agent: %v, want ErrNotSupported", err)
	}
	// On TCP the guest calls need the API key, as every native call.
	anon, err := remote.New(remote.Config{Host: r.url})
	must(t, err)
	defer anon.Close()
	if _, err := anon.Exec(ctx, "plain", sandbox.ExecRequest{Args: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "API key") {
		t.Errorf("exec over TCP without a key: %v", err)
	}
	if err := anon.PutFile(ctx, "plain", "/x", strings.NewReader("x"), sandbox.FileOptions{}); err == nil || !strings.Contains(err.Error(), "API key") {
		t.Errorf("put file over TCP without a key: %v", err)
	}
	keyed, err := remote.New(remote.Config{Host: r.url, APIKey: testKey})
	must(t, err)
	defer keyed.Close()
	if _, err := keyed.Exec(ctx, "plain", sandbox.ExecRequest{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("exec over TCP with the key: %v, want ErrNotSupported", err)
	}
}
