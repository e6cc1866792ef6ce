package fakefc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// proc is one fake (or real) Firecracker process under test.
type proc struct {
	t   testing.TB
	vmm *testutil.VMM
	// cmd, dir, sock, stdout and stderr are vmm's, named short for the
	// tests.
	cmd    *exec.Cmd
	dir    string
	sock   string
	stdout *testutil.SyncBuffer
	stderr *testutil.SyncBuffer
	state  procState // how the process ended, for messages
	client *http.Client
	id     fakeID // read at spawn: the PID may name another process later
}

// fakeID tells one process apart from every other, earlier or later, that
// had the same PID.
type fakeID struct {
	pid   int
	start uint64 // start time, clock ticks since boot (/proc/PID/stat field 22)
}

// suffix is how the names of the process's simulated guests' cgroups end,
// before the tag (see owns).
func (f fakeID) suffix() string { return fmt.Sprintf("-%d-%d", f.pid, f.start) }

// cgroupTagRE matches the tag a fake adds to its cgroups' names when
// fakefc.EnvCgroupTag is set.
var cgroupTagRE = regexp.MustCompile(`^-t[0-9A-Za-z_]+$`)

// owns reports whether the cgroup name is one the process made: it ends
// with the process's PID and start time, and perhaps a tag.
func (f fakeID) owns(name string) bool {
	i := strings.LastIndex(name, f.suffix())
	return i > 0 && (i+len(f.suffix()) == len(name) || cgroupTagRE.MatchString(name[i+len(f.suffix()):]))
}

// fakeID returns the process's identity, as read when it was spawned.
func (p *proc) fakeID() fakeID { return p.id }

// procState prints how a process ended, as %v prints *os.ProcessState:
// "<nil>" while it runs.
type procState struct{ vmm *testutil.VMM }

func (s procState) String() string {
	if !s.vmm.Exited() {
		return "<nil>"
	}
	return s.vmm.State().String()
}

// spawnOpts say how to spawn a process.
type spawnOpts struct {
	bin      string   // executable; the fake when ""
	settings string   // $FAKEFC
	args     []string // extra arguments after --api-sock and --id
	dir      string   // working directory for files; a new short one when ""
	noWait   bool     // do not wait for the API socket
	env      []string // added to the environment
}

// spawn starts a process, waits for its API socket unless o.noWait, and
// registers a cleanup that kills and reaps it.
func spawn(t testing.TB, o spawnOpts) *proc {
	t.Helper()
	if o.bin == "" {
		o.bin = testutil.FakeFirecracker(t)
	}
	v := testutil.StartVMM(t, testutil.VMMConfig{
		Path:   o.bin,
		Args:   append([]string{"--id", "test-vm"}, o.args...),
		Env:    append([]string{fakefc.EnvSettings + "=" + o.settings}, o.env...),
		Dir:    o.dir,
		NoWait: o.noWait,
	})
	p := &proc{t: t, vmm: v, cmd: v.Cmd, dir: v.Dir, sock: v.Sock, stdout: v.Stdout, stderr: v.Stderr, state: procState{v}}
	p.id.pid = v.Cmd.Process.Pid
	if start, err := kunix.ProcessStartTime(p.id.pid); err == nil {
		p.id.start = start
	} else if !o.noWait {
		t.Fatalf("start time of the spawned process %d: %v", p.id.pid, err)
	}
	p.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.sock)
		},
	}, Timeout: 10 * time.Second}
	t.Cleanup(p.client.CloseIdleConnections)
	return p
}

// kill sends SIGKILL (if the process still runs) and reaps it.
func (p *proc) kill() { p.vmm.Kill() }

// exited reports whether the process has ended.
func (p *proc) exited() bool { return p.vmm.Exited() }

// waitExit waits for the process to end and returns its exit code (-1 when
// killed by a signal) and the signal, if any.
func (p *proc) waitExit(timeout time.Duration) (int, syscall.Signal) {
	p.t.Helper()
	select {
	case <-p.vmm.Done():
	case <-time.After(timeout):
		p.t.Fatalf("process still running after %v", timeout)
	}
	ws, _ := p.vmm.State().Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

// stillRunning fails the test if the process ends within d.
func (p *proc) stillRunning(d time.Duration) {
	p.t.Helper()
	select {
	case <-p.vmm.Done():
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
func waitFor(t testing.TB, what string, b *testutil.SyncBuffer, s string) {
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
