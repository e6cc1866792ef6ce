package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/kindling-vm/kindling/internal/testutil"
)

// The proofs of the guest capability on the simulated guest: the real
// agent, booted as init from a real ext4 image by the fake Firecracker,
// reached through the sandbox's hybrid-vsock socket. They prove the host
// side and the agent's behaviour, not a guest kernel's (see the real-VM
// test in guest_real_test.go).

// simSandbox boots an agent sandbox and registers, before it, a check
// that its loop device, mount and cgroup are gone once it is removed.
func simSandbox(t *testing.T, o testutil.AgentRootOptions, opts ...Option) (*Runtime, Info) {
	t.Helper()
	testutil.NeedSimulatedGuest(t)
	r, fc := newRuntime(t, false)
	for _, o := range opts {
		o(r)
	}
	id := fmt.Sprintf("sim%d", time.Now().UnixNano()%1e6)
	img := testutil.AgentRootfs(t, o)
	t.Cleanup(func() { checkSimLeftovers(t, id, img) })
	return r, startAgentSandboxOn(t, r, fc, id, img)
}

// checkSimLeftovers fails the test if a simulated guest of sandbox id,
// booted from an image whose path holds img, left a mount, a loop device
// or a cgroup behind.
func checkSimLeftovers(t *testing.T, id, img string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := simLeftovers(id, img)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("simulated guest %s left behind: %s", id, strings.Join(left, "; "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func simLeftovers(id, img string) []string {
	var left []string
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, img) {
			left = append(left, "mount: "+l)
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range loops {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), img) {
			left = append(left, "loop device "+filepath.Base(filepath.Dir(filepath.Dir(f)))+" on "+strings.TrimSpace(string(b)))
		}
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/kindling-sim/" + id + "-*")
	cgs2, _ := filepath.Glob("/sys/fs/cgroup/kindling-sim/" + id + "-*")
	for _, c := range append(cgs, cgs2...) {
		left = append(left, "cgroup "+c)
	}
	return left
}

func TestGuestExec(t *testing.T) {
	r, in := simSandbox(t, testutil.AgentRootOptions{})
	testGuestExec(t, r, in.ID)
}

// testGuestExec runs the exec scenarios in the running agent sandbox id.
func testGuestExec(t *testing.T, r *Runtime, id string) {
	t.Run("exit codes", func(t *testing.T) {
		for _, tc := range []struct {
			script string
			want   int
		}{
			{"true", 0}, {"exit 1", 1}, {"exit 7", 7}, {"kill -TERM $$", 128 + 15}, {"kill -KILL $$", 128 + 9},
		} {
			if code, _, _ := run(t, r, id, ExecRequest{Args: []string{"sh", "-c", tc.script}}); code != tc.want {
				t.Errorf("%q: exit code %d, want %d", tc.script, code, tc.want)
			}
		}
	})
	t.Run("126 and 127", func(t *testing.T) {
		for _, tc := range []struct {
			prog string
			want int
		}{{"no-such-program", 127}, {"/etc/passwd", 126}, {"/tmp", 126}} {
			_, err := r.Exec(context.Background(), id, ExecRequest{Args: []string{tc.prog}})
			var ee *agent.ExecError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.want {
				t.Errorf("exec %s: %v, want an ExecError with code %d", tc.prog, err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), id) {
				t.Errorf("exec %s: %v does not name the sandbox", tc.prog, err)
			}
		}
	})
	t.Run("stdin", func(t *testing.T) {
		var out bytes.Buffer
		ctx := context.Background()
		p, err := r.Exec(ctx, id, ExecRequest{Args: []string{"sh", "-c", "tr a-z A-Z; echo done"}, Stdin: true, Stdout: &out, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		io.WriteString(p.Stdin(), "hello\n")
		io.WriteString(p.Stdin(), "world\n")
		p.Stdin().Close()
		if code, err := p.Wait(ctx); code != 0 || err != nil || out.String() != "HELLO\nWORLD\ndone\n" {
			t.Fatalf("code %d, %v, output %q", code, err, out.String())
		}
	})
	t.Run("pty", func(t *testing.T) {
		out := &testutil.SyncBuffer{}
		ctx := context.Background()
		p, err := r.Exec(ctx, id, ExecRequest{Args: []string{"sh"}, TTY: true, Rows: 30, Cols: 100, Stdout: out})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		io.WriteString(p.Stdin(), "tty; stty size\n")
		waitFor(t, out, "30 100")
		if err := p.Resize(ctx, 40, 120); err != nil {
			t.Fatal(err)
		}
		io.WriteString(p.Stdin(), "stty size; exit 4\n")
		if code, err := p.Wait(ctx); code != 4 || err != nil {
			t.Fatalf("code %d, %v; output %q", code, err, out)
		}
		if s := out.String(); !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "40 120") {
			t.Fatalf("terminal output %q: want a /dev/pts tty, then 40 120", s)
		}
	})
	t.Run("env cwd user", func(t *testing.T) {
		code, out, _ := run(t, r, id, ExecRequest{Args: []string{"sh", "-c", "echo $A $(pwd) $(id -u) $(id -g) $HOME"},
			Env: []string{"A=b"}, Dir: "/tmp", User: "user"})
		if code != 0 || out != "b /tmp 1000 1000 /home/user\n" {
			t.Fatalf("code %d, output %q", code, out)
		}
		code, out, _ = run(t, r, id, ExecRequest{Args: []string{"id", "-u"}, User: "root"})
		if code != 0 || out != "0\n" {
			t.Fatalf("as root: code %d, output %q", code, out)
		}
		_, err := r.Exec(context.Background(), id, ExecRequest{Args: []string{"true"}, User: "nosuchuser"})
		if !errors.Is(err, agent.ErrAccessDenied) {
			t.Fatalf("unknown user: %v, want ErrAccessDenied", err)
		}
	})
	t.Run("signal", func(t *testing.T) {
		out := &testutil.SyncBuffer{}
		ctx := context.Background()
		p, err := r.Exec(ctx, id, ExecRequest{Args: []string{"sh", "-c", `trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done`}, Stdout: out, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		waitFor(t, out, "ready")
		if err := p.Signal(ctx, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(ctx); code != 42 || err != nil || !strings.Contains(out.String(), "got TERM") {
			t.Fatalf("code %d, %v, output %q", code, err, out)
		}
	})
	t.Run("cancel kills", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		out := &testutil.SyncBuffer{}
		p, err := r.Exec(ctx, id, ExecRequest{Args: []string{"sh", "-c", "echo $$; exec sleep 60"}, Stdout: out, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		waitFor(t, out, "\n")
		pid := strings.TrimSpace(out.String())
		cancel()
		if _, err := p.Wait(context.Background()); !errors.Is(err, context.Canceled) {
			t.Fatalf("wait after cancel: %v, want context.Canceled", err)
		}
		// The sleep is gone from the guest.
		code, _, _ := run(t, r, id, ExecRequest{Args: []string{"sh", "-c", "test ! -e /proc/" + pid}})
		if code != 0 {
			t.Fatalf("process %s still runs after the cancel", pid)
		}
	})
	t.Run("16 concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out bytes.Buffer
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				p, err := r.Exec(ctx, id, ExecRequest{Args: []string{"sh", "-c", "sleep 0.2; echo $0; exit $1", fmt.Sprint(i), fmt.Sprint(i % 5)}, Stdout: &out, Stderr: io.Discard})
				if err != nil {
					errs <- err
					return
				}
				defer p.Close()
				code, err := p.Wait(ctx)
				if err != nil || code != i%5 || out.String() != fmt.Sprintf("%d\n", i) {
					errs <- fmt.Errorf("exec %d: code %d, %v, output %q", i, code, err, out.String())
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// waitFor waits until b holds s.
func waitFor(t *testing.T, b *testutil.SyncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output never showed %q: %q", s, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bigFileSize is the size of the file sent up and back: 100 MiB, 8 MiB
// with -short.
func bigFileSize() int {
	if testing.Short() {
		return 8 << 20
	}
	return 100 << 20
}

func TestGuestFiles(t *testing.T) {
	r, in := simSandbox(t, testutil.AgentRootOptions{SizeMiB: 64 + bigFileSize()>>20})
	testGuestFiles(t, r, in)
}

// testGuestFiles runs the file scenarios in the running agent sandbox in.
func testGuestFiles(t *testing.T, r *Runtime, in Info) {
	size := bigFileSize()
	id := in.ID
	ctx := context.Background()
	t.Run("big file up and back", func(t *testing.T) {
		sum := sha256.New()
		if err := r.PutFile(ctx, id, "/var/tmp/big", io.TeeReader(io.LimitReader(rand.Reader, int64(size)), sum), FileOptions{}); err != nil {
			t.Fatal(err)
		}
		want := hex.EncodeToString(sum.Sum(nil))
		code, out, _ := run(t, r, id, ExecRequest{Args: []string{"sha256sum", "/var/tmp/big"}})
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Fatalf("sha256sum in the guest: %q, want %s", out, want)
		}
		rc, err := r.GetFile(ctx, id, "/var/tmp/big", FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		back := sha256.New()
		n, err := io.Copy(back, rc)
		rc.Close()
		if err != nil || n != int64(size) || hex.EncodeToString(back.Sum(nil)) != want {
			t.Fatalf("got back %d bytes (%v), sha256 %x, want %d bytes, %s", n, err, back.Sum(nil), size, want)
		}
		if err := r.RemoveFile(ctx, id, "/var/tmp/big", FileOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stat list mkdir chmod", func(t *testing.T) {
		if err := r.MakeDir(ctx, id, "/srv/a/b", FileOptions{User: "user"}); err != nil {
			t.Fatal(err)
		}
		if err := r.MakeDir(ctx, id, "/srv/a/b", FileOptions{}); !errors.Is(err, ErrExists) {
			t.Fatalf("mkdir again: %v, want ErrExists", err)
		}
		if err := r.PutFile(ctx, id, "/srv/a/run.sh", strings.NewReader("#!/bin/sh\necho ran\n"), FileOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := r.Chmod(ctx, id, "/srv/a/run.sh", 0o750, FileOptions{}); err != nil {
			t.Fatal(err)
		}
		fi, err := r.StatFile(ctx, id, "/srv/a/run.sh", FileOptions{})
		if err != nil || fi.Mode != 0o750 || fi.Type != TypeFile || fi.Size != 19 {
			t.Fatalf("stat: %+v, %v", fi, err)
		}
		if code, out, _ := run(t, r, id, ExecRequest{Args: []string{"/srv/a/run.sh"}}); code != 0 || out != "ran\n" {
			t.Fatalf("run the file: %d %q", code, out)
		}
		ents, err := r.ListDir(ctx, id, "/srv/a", 1, FileOptions{})
		if err != nil || len(ents) != 2 {
			t.Fatalf("list: %+v, %v", ents, err)
		}
		if _, err := r.StatFile(ctx, id, "/no/such", FileOptions{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat of a missing file: %v, want ErrNotFound", err)
		}
		if err := r.Chmod(ctx, id, "/no/such", 0o644, FileOptions{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("chmod of a missing file: %v, want ErrNotFound", err)
		}
	})
	t.Run("watch", func(t *testing.T) {
		if err := r.MakeDir(ctx, id, "/srv/w", FileOptions{}); err != nil {
			t.Fatal(err)
		}
		w, err := r.WatchDir(ctx, id, "/srv/w", true, FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := r.PutFile(ctx, id, "/srv/w/new.txt", strings.NewReader("x"), FileOptions{}); err != nil {
			t.Fatal(err)
		}
		if code, _, _ := run(t, r, id, ExecRequest{Args: []string{"rm", "/srv/w/new.txt"}}); code != 0 {
			t.Fatal("rm failed")
		}
		seen := map[string]bool{}
		timeout := time.After(10 * time.Second)
		for !seen["create"] || !seen["remove"] {
			select {
			case ev, ok := <-w.Events():
				if !ok {
					t.Fatalf("watch ended: %v", w.Err())
				}
				if ev.Name == "new.txt" {
					seen[ev.Type.String()] = true
				}
			case <-timeout:
				t.Fatalf("events seen: %v; want create and remove of new.txt", seen)
			}
		}
	})
	t.Run("token refusal", func(t *testing.T) {
		c, err := agent.New(agent.Config{VsockPath: in.VsockSocket, AccessToken: "not-the-token"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.GetFile(ctx, "/etc/passwd", agent.FileOptions{})
		var re *agent.RemoteError
		if !errors.As(err, &re) || re.Code != "401" || !errors.Is(err, agent.ErrAccessDenied) {
			t.Fatalf("get without the token: %v, want a 401", err)
		}
		if err := c.Health(ctx); err != nil {
			t.Fatalf("health stays open: %v", err)
		}
	})
}

// agentPID returns the host PID of the agent running as the simulated
// guest's init: the child of the fake Firecracker named kindling-agent.
func agentPID(t *testing.T, in Info) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", in.PID))
	for _, tf := range tasks {
		b, _ := os.ReadFile(tf)
		for _, f := range strings.Fields(string(b)) {
			var pid int
			fmt.Sscan(f, &pid)
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "kindling-agent" {
				return pid
			}
		}
	}
	t.Fatalf("no kindling-agent among the children of firecracker %d", in.PID)
	return 0
}

func TestGuestFaults(t *testing.T) {
	t.Run("agent dies mid-stream", func(t *testing.T) {
		r, in := simSandbox(t, testutil.AgentRootOptions{})
		out := &testutil.SyncBuffer{}
		ctx := context.Background()
		p, err := r.Exec(ctx, in.ID, ExecRequest{Args: []string{"sh", "-c", "echo started; sleep 60"}, Stdout: out, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		waitFor(t, out, "started")
		if err := syscall.Kill(agentPID(t, in), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err = p.Wait(wctx)
		if !errors.Is(err, ErrUnavailable) || wctx.Err() != nil {
			t.Fatalf("wait after the agent died: %v (after %v), want ErrUnavailable at once", err, time.Since(start))
		}
		if !strings.Contains(err.Error(), in.ID) || !strings.Contains(err.Error(), in.VsockSocket) {
			t.Fatalf("error %q names neither the sandbox nor the socket", err)
		}
	})
	t.Run("guest never answers after start", func(t *testing.T) {
		testutil.NeedSimulatedGuest(t)
		r, fc := newRuntime(t, false)
		WithAgentTimeout(time.Second)(r)
		img := testutil.AgentRootfs(t, testutil.AgentRootOptions{Init: testutil.SilentInit(t)})
		ctx := context.Background()
		id := "silent"
		t.Cleanup(func() { checkSimLeftovers(t, id, img) })
		if _, err := r.Create(ctx, Spec{ID: id, Kernel: agentKernel(t), KernelArgs: testutil.AgentBootArgs, Firecracker: fc, Rootfs: &Disk{Path: img}}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer r.Remove(ctx, id, true)
		start := time.Now()
		_, err := r.Start(ctx, id)
		took := time.Since(start)
		if !errors.Is(err, ErrUnavailable) || took > 8*time.Second {
			t.Fatalf("start: %v after %v, want ErrUnavailable within the agent timeout", err, took)
		}
		sock := filepath.Join(r.Root(), id, vsockName)
		for _, want := range []string{`sandbox "silent"`, sock, "49983", "the sandbox was stopped"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if st := r.statusOf(ctx, id); st != Exited {
			t.Errorf("after the failed start: %s, want exited", st)
		}
	})
	t.Run("frozen agent", func(t *testing.T) {
		r, in := simSandbox(t, testutil.AgentRootOptions{}, WithAgentTimeout(time.Second))
		pid := agentPID(t, in)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(pid, syscall.SIGCONT)
		start := time.Now()
		_, err := r.Exec(context.Background(), in.ID, ExecRequest{Args: []string{"true"}})
		if !errors.Is(err, ErrUnavailable) || time.Since(start) > 8*time.Second {
			t.Fatalf("exec in a frozen guest: %v after %v, want ErrUnavailable within the agent timeout", err, time.Since(start))
		}
		if !strings.Contains(err.Error(), in.ID) || !strings.Contains(err.Error(), in.VsockSocket) {
			t.Fatalf("error %q names neither the sandbox nor the socket", err)
		}
		syscall.Kill(pid, syscall.SIGCONT)
		if code, _, _ := run(t, r, in.ID, ExecRequest{Args: []string{"true"}}); code != 0 {
			t.Fatal("exec after the thaw failed")
		}
	})
}
