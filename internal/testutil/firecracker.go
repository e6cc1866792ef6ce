package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for one writer (such as the copier of
// an exec.Cmd's output) and concurrent readers. The zero value is ready.
type SyncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// VMMConfig says how StartVMM spawns a Firecracker-like process.
type VMMConfig struct {
	// Path is the executable: a real Firecracker or FakeFirecracker(t).
	Path string
	// Args follow "--api-sock <Dir>/api.sock" (and "--log-path", with
	// LogFile) on the command line.
	Args []string
	// Env is added to the test process's environment.
	Env []string
	// Dir holds the API socket (and the log file) and is the process's
	// working directory; a new ShortTempDir when "".
	Dir string
	// LogFile creates an empty <Dir>/fc.log and passes it as --log-path,
	// as Firecracker wants the file to exist.
	LogFile bool
	// NoWait returns at once instead of waiting for the API socket to
	// accept connections (for a process expected to fail early).
	NoWait bool
}

// vmmReadyTimeout bounds StartVMM's wait for the API socket: generous, as
// the machines running the tests can be loaded.
const vmmReadyTimeout = 10 * time.Second

// VMM is a Firecracker-like process started by StartVMM.
type VMM struct {
	// Cmd is the process; do not call its Wait (VMM does).
	Cmd *exec.Cmd
	// Dir holds the API socket and the log file.
	Dir string
	// Sock is the API socket's path.
	Sock string
	// LogPath is the --log-path file, "" without VMMConfig.LogFile.
	LogPath string
	// Stdout and Stderr capture the process's output (stdout is the
	// serial console of a real Firecracker).
	Stdout, Stderr *SyncBuffer

	done    chan struct{} // closed once Cmd.Wait returned
	waitErr error         // Cmd.Wait's result, read after done is closed
}

// StartVMM spawns c.Path with its API socket at <Dir>/api.sock, waits until
// the socket accepts connections (unless c.NoWait), and registers a cleanup
// that kills and reaps the process and removes the socket file, which
// Firecracker never removes. It fails the test if the process cannot start
// or ends before it serves its API.
func StartVMM(t testing.TB, c VMMConfig) *VMM {
	t.Helper()
	if c.Dir == "" {
		c.Dir = ShortTempDir(t)
	}
	v := &VMM{Dir: c.Dir, Sock: filepath.Join(c.Dir, "api.sock"), Stdout: &SyncBuffer{}, Stderr: &SyncBuffer{}, done: make(chan struct{})}
	args := []string{"--api-sock", v.Sock}
	if c.LogFile {
		v.LogPath = filepath.Join(c.Dir, "fc.log")
		if err := os.WriteFile(v.LogPath, nil, 0o600); err != nil {
			t.Fatalf("create log file: %v", err)
		}
		args = append(args, "--log-path", v.LogPath)
	}
	v.Cmd = exec.Command(c.Path, append(args, c.Args...)...)
	v.Cmd.Env = append(os.Environ(), c.Env...)
	v.Cmd.Dir = c.Dir // relative paths in requests (vsock sockets) land here
	v.Cmd.Stdout, v.Cmd.Stderr = v.Stdout, v.Stderr
	if err := v.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", c.Path, err)
	}
	go func() {
		v.waitErr = v.Cmd.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		v.Kill()
		_ = os.Remove(v.Sock)
	})
	if !c.NoWait {
		v.WaitSocket(t)
	}
	return v
}

// Done is closed once the process has ended and been reaped.
func (v *VMM) Done() <-chan struct{} { return v.done }

// Exited reports whether the process has ended and been reaped.
func (v *VMM) Exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// WaitErr returns cmd.Wait's result: nil for exit status 0. Call it only
// once Done is closed.
func (v *VMM) WaitErr() error { return v.waitErr }

// State returns the ended process's state. Call it only once Done is
// closed.
func (v *VMM) State() *os.ProcessState { return v.Cmd.ProcessState }

// Kill sends SIGKILL if the process still runs and waits until it is
// reaped. It is idempotent.
func (v *VMM) Kill() {
	if v.Exited() {
		return
	}
	_ = v.Cmd.Process.Signal(syscall.SIGKILL)
	<-v.done
}

// WaitSocket waits until the API socket accepts connections, and fails the
// test with the process's output if it ends first or the wait times out.
func (v *VMM) WaitSocket(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(vmmReadyTimeout)
	for {
		c, err := net.Dial("unix", v.Sock)
		if err == nil {
			c.Close()
			return
		}
		if v.Exited() {
			t.Fatalf("%s exited before serving its API: %v\n%s", v.Cmd.Path, v.State(), v.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: API socket %s not ready after %v: %v\n%s", v.Cmd.Path, v.Sock, vmmReadyTimeout, err, v.output())
		}
		time.Sleep(time.Millisecond)
	}
}

// Log returns the --log-path file's contents for a failure message, or
// says why there are none.
func (v *VMM) Log() string {
	if v.LogPath == "" {
		return "(no log file)"
	}
	b, err := os.ReadFile(v.LogPath)
	if err != nil {
		return fmt.Sprintf("(no firecracker log: %v)", err)
	}
	return "firecracker log:\n" + string(b)
}

// output renders the process's stdout, stderr and log for a failure
// message.
func (v *VMM) output() string {
	s := fmt.Sprintf("stdout: %s\nstderr: %s", v.Stdout, v.Stderr)
	if v.LogPath != "" {
		s += "\n" + v.Log()
	}
	return s
}
