package fakefc_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestFaultInjection(t *testing.T) {
	testutil.CheckLeaks(t)
	mc := `{"vcpu_count":1,"mem_size_mib":64}`
	t.Run("count 1", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"fail":[{"method":"PUT","path":"/machine-config","status":500,"fault":"injected","count":1}]}`})
		status, body := p.do("PUT", "/machine-config", mc)
		if status != 500 || fault(t, body) != "injected" {
			t.Errorf("first PUT: %d %s", status, body)
		}
		p.must(204, "PUT", "/machine-config", mc)
	})
	t.Run("count 0 is always", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"fail":[{"method":"GET","path":"/version","fault":"nope"}]}`})
		for range 3 {
			status, body := p.do("GET", "/version", "")
			if status != 400 || fault(t, body) != "nope" {
				t.Fatalf("GET /version: %d %s", status, body)
			}
		}
		p.must(200, "GET", "/", "")
	})
	t.Run("delay", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"delay":"30ms"}`})
		start := time.Now()
		p.must(200, "GET", "/", "")
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Errorf("answer after %v, want at least 30ms", d)
		}
	})
	t.Run("exit_at", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"exit_at":2}`})
		p.must(200, "GET", "/", "")
		if _, _, err := p.try("GET", "/", ""); err == nil {
			t.Errorf("request 2 was answered")
		}
		if code, _ := p.waitExit(5 * time.Second); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})
	t.Run("no_socket", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"no_socket":true}`, noWait: true})
		p.stillRunning(100 * time.Millisecond)
		if _, err := os.Stat(p.sock); !os.IsNotExist(err) {
			t.Errorf("socket stat: %v, want not exist", err)
		}
	})
	t.Run("die_at_start", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"die_at_start":true,"stderr":"why it died"}`, noWait: true})
		if code, _ := p.waitExit(5 * time.Second); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if !strings.Contains(p.stderr.String(), "why it died\n") {
			t.Errorf("stderr %q, want the stderr setting before dying", p.stderr)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"stderr":"warning: something odd"}`})
		p.waitStderr("warning: something odd\n")
	})
	t.Run("malformed", func(t *testing.T) {
		for _, s := range []string{`{"version":`, `{"verison":"1.7.0"}`, `{"version":"one"}`, `{"delay":"soon"}`, `{"ctrl_alt_del":"reboot"}`} {
			p := spawn(t, spawnOpts{settings: s, noWait: true})
			if code, _ := p.waitExit(5 * time.Second); code != 1 {
				t.Errorf("FAKEFC=%s: exit %d, want 1", s, code)
			}
			if !strings.Contains(p.stderr.String(), "FAKEFC") {
				t.Errorf("FAKEFC=%s: stderr %q", s, p.stderr)
			}
		}
	})
}

func TestSignals(t *testing.T) {
	testutil.CheckLeaks(t)
	t.Run("SIGTERM kills", func(t *testing.T) {
		p := spawn(t, spawnOpts{})
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if _, sig := p.waitExit(5 * time.Second); sig != syscall.SIGTERM {
			t.Errorf("signal %v, want SIGTERM", sig)
		}
	})
	t.Run("ignore_sigterm", func(t *testing.T) {
		p := spawn(t, spawnOpts{settings: `{"ignore_sigterm":true}`})
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.stillRunning(50 * time.Millisecond)
		p.must(200, "GET", "/", "")
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, sig := p.waitExit(5 * time.Second); sig != syscall.SIGKILL {
			t.Errorf("signal %v, want SIGKILL", sig)
		}
	})
}

func TestCtrlAltDel(t *testing.T) {
	testutil.CheckLeaks(t)
	tests := []struct {
		setting  string
		wantExit bool
	}{
		{"", true},
		{`"ctrl_alt_del":"exit"`, true},
		{`"ctrl_alt_del":"ignore"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.setting, func(t *testing.T) {
			p := spawn(t, spawnOpts{settings: "{" + tt.setting + "}"})
			boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "up"}), 1)
			p.must(204, "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
			if !tt.wantExit {
				p.stillRunning(50 * time.Millisecond)
				return
			}
			if code, sig := p.waitExit(5 * time.Second); code != 0 || sig != 0 {
				t.Errorf("exit %d signal %v, want 0", code, sig)
			}
		})
	}
	t.Run("while paused", func(t *testing.T) {
		p := spawn(t, spawnOpts{})
		boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "up"}), 1)
		p.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
		p.must(204, "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
		p.stillRunning(50 * time.Millisecond)
		p.must(204, "PATCH", "/vm", `{"state":"Resumed"}`)
		if code, _ := p.waitExit(5 * time.Second); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	})
}

func TestCommandLine(t *testing.T) {
	testutil.CheckLeaks(t)
	bin := testutil.FakeFirecracker(t)
	t.Run("version", func(t *testing.T) {
		cmd := exec.Command(bin, "--version")
		cmd.Env = append(os.Environ(), fakefc.EnvSettings+`={"version":"1.7.0"}`)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(out), "Firecracker v1.7.0\n") {
			t.Errorf("--version printed %q", out)
		}
	})
	t.Run("unknown flag", func(t *testing.T) {
		cmd := exec.Command(bin, "--bogus")
		cmd.Env = append(os.Environ(), fakefc.EnvSettings+"=")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		if !isExitError(err) || cmd.ProcessState.ExitCode() != fakefc.ExitArgParsing {
			t.Errorf("exit %v, want %d", err, fakefc.ExitArgParsing)
		}
		if !strings.Contains(stderr.String(), "bogus") {
			t.Errorf("stderr %q", stderr.String())
		}
	})
	t.Run("socket exists", func(t *testing.T) {
		dir := testutil.ShortTempDir(t)
		writeFile(t, dir, "api.sock", "")
		p := spawn(t, spawnOpts{dir: dir, noWait: true})
		if code, _ := p.waitExit(5 * time.Second); code == 0 {
			t.Errorf("exit 0, want an error")
		}
		if !strings.Contains(p.stderr.String(), "address already in use") {
			t.Errorf("stderr %q, want address in use", p.stderr)
		}
	})
	t.Run("log path", func(t *testing.T) {
		dir := testutil.ShortTempDir(t)
		logf := writeFile(t, dir, "fc.log", "earlier line\n")
		p := spawn(t, spawnOpts{dir: dir, args: []string{"--log-path", logf, "--level", "Info", "--show-level"}})
		p.must(200, "GET", "/", "")
		b, err := os.ReadFile(logf)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "earlier line\n") || !strings.Contains(string(b), "[test-vm:main:INFO] Running Firecracker v1.14.2\n") {
			t.Errorf("log file:\n%s", b)
		}
		if strings.Contains(p.stdout.String(), "Running Firecracker") {
			t.Errorf("log lines on stdout with --log-path: %q", p.stdout)
		}
	})
	t.Run("log to stdout", func(t *testing.T) {
		p := spawn(t, spawnOpts{})
		p.waitOutput("[test-vm:main] Running Firecracker v1.14.2\n")
	})
	t.Run("log path missing", func(t *testing.T) {
		dir := testutil.ShortTempDir(t)
		p := spawn(t, spawnOpts{dir: dir, args: []string{"--log-path", filepath.Join(dir, "missing.log")}, noWait: true})
		if code, _ := p.waitExit(5 * time.Second); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})
	t.Run("payload limit", func(t *testing.T) {
		p := spawn(t, spawnOpts{args: []string{"--http-api-max-payload-size", "100"}})
		body := fmt.Sprintf(`{"latest":%q}`, strings.Repeat("x", 200))
		status, resp := p.do("PUT", "/mmds", body)
		if status != 400 || !strings.Contains(fault(t, resp), "larger than the limit") {
			t.Errorf("big body: %d %s", status, resp)
		}
	})
}

func TestMetrics(t *testing.T) {
	testutil.CheckLeaks(t)
	p := spawn(t, spawnOpts{})
	metrics := writeFile(t, p.dir, "metrics.json", "")
	p.must(204, "PUT", "/metrics", fmt.Sprintf(`{"metrics_path":%q}`, metrics))
	status, body := p.do("PUT", "/metrics", `{"metrics_path":"/nonexistent/m"}`)
	if status != 400 {
		t.Errorf("metrics to a missing file: %d %s", status, body)
	}
	boot(t, p, testutil.GuestKernel(t, guest.Options{Message: "up"}), 1)
	p.must(204, "PUT", "/actions", `{"action_type":"FlushMetrics"}`)
	b, err := os.ReadFile(metrics)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], `{"utc_timestamp_ms":`) {
		t.Errorf("metrics file: %q", b)
	}
}

func TestConnectionLimit(t *testing.T) {
	testutil.CheckLeaks(t)
	p := spawn(t, spawnOpts{})
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	get := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.Contains(line, "200") {
			return fmt.Errorf("status line %q", line)
		}
		return nil
	}
	for i := range 10 {
		c, err := net.Dial("unix", p.sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if err := get(c); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	c, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, c)
	// The real Firecracker answers a request on an 11th connection 503.
	if err := get(c); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("connection 11: %v; want a 503 status line", err)
	}
	// Closing one frees its slot.
	conns[0].Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := net.Dial("unix", p.sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if get(c) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot freed after closing a connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
