package vmmproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Command is a VMM process's command line, as its starter built it.
type Command struct {
	// Path is the executable: Firecracker, or the jailer.
	Path string   `json:"path"`
	Args []string `json:"args,omitempty"`
	// Env is added to the caller's environment.
	Env []string `json:"env,omitempty"`
	// Dir is the process's working directory.
	Dir string `json:"dir,omitempty"`
	// NetNS, when set, is the network namespace (a name under /run/netns
	// or a path) the process starts in.
	NetNS string `json:"netns,omitempty"`
	// PIDFile, when set, is where a jailer started with --new-pid-ns writes
	// the PID of the Firecracker it forks: that process, not the jailer,
	// is the VMM (it is not the caller's child, so its exit status is
	// unknown).
	PIDFile string `json:"pid_file,omitempty"`
}

// Exit is how the process ended.
type Exit struct {
	// Code is the exit code, -1 when killed by a signal or unknown.
	Code int `json:"code"`
	// Signal is the number of the signal that killed it, 0 if none.
	Signal int `json:"signal,omitempty"`
	// Unknown: the process was not the caller's child.
	Unknown bool `json:"unknown,omitempty"`
}

// String returns "exit status 1", "killed by signal: killed" or "exited
// (status unknown)".
func (e Exit) String() string {
	switch {
	case e.Unknown:
		return "exited (status unknown)"
	case e.Signal != 0:
		return "killed by signal: " + kunix.SignalName(e.Signal)
	default:
		return "exit status " + strconv.Itoa(e.Code)
	}
}

// Process is a started VMM process. Exactly one goroutine waits for it.
type Process struct {
	pid       int
	startTime uint64
	child     *os.Process  // the VMM when it is our child
	pidfd     *kunix.Pidfd // the VMM when it is not (a jailer's fork)
	stderr    *Tail

	done chan struct{} // closed once exited and its output drained
	exit Exit          // written before done is closed
}

// PID returns the VMM's PID.
func (p *Process) PID() int { return p.pid }

// StartTime returns the VMM's start time in clock ticks since boot.
func (p *Process) StartTime() uint64 { return p.startTime }

// Done is closed once the VMM has exited (and been reaped when it is our
// child) and its stdout and stderr have been drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit returns how the VMM ended; valid once Done is closed.
func (p *Process) Exit() Exit { return p.exit }

// Stderr returns the last lines the process wrote on stderr.
func (p *Process) Stderr() string { return p.stderr.String() }

// Signal sends sig to the VMM; an exited VMM is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	var err error
	if p.pidfd != nil {
		err = p.pidfd.Signal(sig)
	} else {
		err = p.child.Signal(sig)
	}
	if err != nil && (errors.Is(err, os.ErrProcessDone) || errors.Is(err, os.ErrClosed) || kunix.IsNoProcess(err)) {
		return nil
	}
	return err
}

// End ends the VMM: SIGTERM (unless kill), then SIGKILL once grace has
// passed, and waits until it is gone or ctx ends.
func (p *Process) End(ctx context.Context, grace time.Duration, kill bool) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if !kill {
		_ = p.Signal(syscall.SIGCONT)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			return fmt.Errorf("end firecracker (pid %d): %w", p.pid, err)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			return nil
		case <-t.C:
		case <-ctx.Done():
		}
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill firecracker (pid %d): %w", p.pid, err)
	}
	_ = p.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for firecracker (pid %d) after SIGKILL: %w", p.pid, ctx.Err())
	}
}

// Start starts c with its stdout copied to console (nil discards) and
// returns once the VMM runs (for a jailer with c.PIDFile, once the jailer
// has named its Firecracker, within ctx). console is written to by one
// goroutine only, until Done is closed.
func Start(ctx context.Context, c Command, console io.Writer) (*Process, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Dir = c.Dir
	cmd.SysProcAttr = kunix.NewSessionAttr()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	// A child inherits the network namespace of the thread that forks it.
	err = InNetNS(c.NetNS, cmd.Start)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	first := &Process{pid: cmd.Process.Pid, child: cmd.Process, stderr: NewTail(20), done: make(chan struct{})}
	// Read before the process can be reaped: only the goroutine below reaps.
	first.startTime, _ = kunix.ProcessStartTime(first.pid)

	var drained sync.WaitGroup
	drained.Add(2)
	go func() {
		defer drained.Done()
		_, _ = io.Copy(first.stderr, errR)
		errR.Close()
	}()
	go func() {
		defer drained.Done()
		copyConsole(console, outR)
		outR.Close()
	}()
	reaped := make(chan struct{})
	go func() {
		werr := cmd.Wait()
		e := Exit{Code: -1}
		if ps := cmd.ProcessState; ps != nil {
			e.Code = ps.ExitCode()
			e.Signal = kunix.ExitSignal(ps)
		} else if werr != nil {
			e.Unknown = true
		}
		first.exit = e
		close(reaped)
		drained.Wait()
		close(first.done)
	}()
	if c.PIDFile == "" {
		return first, nil
	}
	p, err := adopt(ctx, c.PIDFile, first, reaped)
	if err != nil {
		_ = first.Signal(syscall.SIGKILL)
		<-first.done
		return nil, err
	}
	return p, nil
}

// adopt follows a jailer started with --new-pid-ns: it forks Firecracker,
// writes its PID to pidFile and exits. The returned process watches that
// PID through a pidfd; it is done once both it and the jailer are.
func adopt(ctx context.Context, pidFile string, jailer *Process, reaped <-chan struct{}) (*Process, error) {
	delay := 100 * time.Microsecond
	for jailerGone := false; ; {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				return watch(pid, jailer)
			}
		}
		if jailerGone {
			return nil, fmt.Errorf("jailer %s without writing a PID to %s%s", jailer.exit, pidFile, stderrSuffix(jailer))
		}
		select {
		case <-reaped:
			if jailer.exit.Code != 0 || jailer.exit.Signal != 0 {
				<-jailer.done
				return nil, fmt.Errorf("jailer %s before its firecracker started%s", jailer.exit, stderrSuffix(jailer))
			}
			jailerGone = true // it exits once the PID file is written: read it again
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for jailer pid file %s: %w", pidFile, ctx.Err())
		case <-time.After(delay):
			if delay < time.Millisecond {
				delay *= 2
			}
		}
	}
}

func stderrSuffix(p *Process) string {
	if s := p.Stderr(); s != "" {
		return ": " + s
	}
	return ""
}

// watch returns a process for pid, which is not our child.
func watch(pid int, jailer *Process) (*Process, error) {
	fd, err := kunix.OpenPidfd(pid)
	if err != nil {
		return nil, fmt.Errorf("jailed firecracker (pid %d): %w", pid, err)
	}
	st, err := kunix.ProcessStartTime(pid)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("jailed firecracker (pid %d): %w", pid, err)
	}
	p := &Process{pid: pid, startTime: st, pidfd: fd, stderr: jailer.stderr, done: make(chan struct{})}
	go func() {
		_ = fd.Wait()
		p.exit = Exit{Code: -1, Unknown: true}
		<-jailer.done
		fd.Close()
		close(p.done)
	}()
	return p, nil
}

// copyConsole copies the console stream to w; a failing writer must not
// block the guest, so its errors are dropped.
func copyConsole(w io.Writer, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 && w != nil {
			_, _ = w.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// Tail keeps the last lines written to it (a process's stderr, for the
// error that tells why it ended); the driver keeps Firecracker's with it
// too.
type Tail struct {
	max int

	mu    sync.Mutex // guards lines and part
	lines []string
	part  []byte
}

// NewTail returns a Tail keeping the last max lines.
func NewTail(max int) *Tail { return &Tail{max: max} }

// MaxTailLine bounds one line a Tail keeps (its last bytes are kept).
const MaxTailLine = 4096

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.part = append(t.part, p...)
			if len(t.part) > MaxTailLine {
				t.part = t.part[len(t.part)-MaxTailLine:]
			}
			break
		}
		line := append(t.part, p[:i]...)
		t.part = nil
		if len(line) > MaxTailLine {
			line = line[len(line)-MaxTailLine:]
		}
		if s := strings.TrimRight(string(line), "\r"); s != "" {
			t.lines = append(t.lines, s)
			if len(t.lines) > t.max {
				t.lines = append(t.lines[:0], t.lines[len(t.lines)-t.max:]...)
			}
		}
		p = p[i+1:]
	}
	return n, nil
}

// String returns the kept lines joined by newlines, trailing text
// included.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.part) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.part))
	}
	return strings.Join(lines, "\n")
}
