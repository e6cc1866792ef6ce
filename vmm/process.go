package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/netdev"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/internal/vmmproc"
)

// ExitStatus is how the Firecracker process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was killed by a signal
	// or its status is unknown.
	Code int `json:"code"`
	// Signal is the number of the signal that killed the process, 0 if none.
	Signal int `json:"signal,omitempty"`
	// Unknown is set when the process was not this one's child (Attach, or a
	// jailer with a new PID namespace): it has exited, but its exit status
	// went to its parent.
	Unknown bool `json:"unknown,omitempty"`
	// Time is when the exit was observed.
	Time time.Time `json:"time"`
}

// Success reports whether the process exited with status 0.
func (s ExitStatus) Success() bool { return !s.Unknown && s.Signal == 0 && s.Code == 0 }

// String returns "exit status 1", "killed by signal: killed" or
// "exited (status unknown)".
func (s ExitStatus) String() string {
	switch {
	case s.Unknown:
		return "exited (status unknown)"
	case s.Signal != 0:
		return "killed by signal: " + kunix.SignalName(s.Signal)
	default:
		return fmt.Sprintf("exit status %d", s.Code)
	}
}

// process is one running Firecracker: either our child (cmd set; one
// goroutine calls cmd.Wait) or a process found by PID (pidfd set; one
// goroutine waits on the pidfd). Either way done is closed once it has
// exited and every output stream it held has been drained.
type process struct {
	pid       int
	startTime uint64
	cmd       *exec.Cmd    // nil when the process is not our child
	pidfd     *kunix.Pidfd // nil for a child: os.Process signals through its own pidfd
	stderr    *tailBuffer  // nil when stderr is not ours to read
	// gone: a spawned process that had exited before it could be watched
	// (no cmd, no pidfd).
	gone bool

	// reaped is closed once our child has been waited for (before its
	// output is drained); nil for a process that is not our child.
	reaped chan struct{}
	done   chan struct{}
	// dead, when not nil, is closed as soon as the process is seen to
	// have exited, which can be well before done: for a process another
	// one reaps (a monitor's child), done waits for the reaper's report of
	// its exit status as well.
	dead chan struct{}
	// exit is written once before done is closed and read only after.
	exit ExitStatus
}

// signal sends sig to the process; an exited process gives an error
// matching os.ErrProcessDone or kunix.ErrNoProcess.
func (p *process) signal(sig kunix.Signal) error {
	if p.gone {
		return os.ErrProcessDone
	}
	if p.pidfd != nil {
		return p.pidfd.Signal(sig)
	}
	return p.cmd.Process.Signal(sig)
}

// died returns a channel closed once the process is known to have exited
// (its exit status may not be known yet).
func (p *process) died() <-chan struct{} {
	if p.dead != nil {
		return p.dead
	}
	return p.done
}

// exited reports whether done is closed.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an exit for an error message, with stderr's tail.
func (p *process) exitError() error {
	msg := "firecracker " + p.exit.String()
	if tail := p.stderrTail(); tail != "" {
		msg += ": " + tail
	}
	return &exitError{status: p.exit, msg: msg}
}

func (p *process) stderrTail() string {
	if p.stderr == nil {
		return ""
	}
	return p.stderr.String()
}

// exitError reports that Firecracker exited; it matches ErrExited.
type exitError struct {
	status ExitStatus
	msg    string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) Is(target error) bool {
	return target == ErrExited || target == errdefs.ErrConflict
}

// spawnSpec is what spawn needs to start a process.
type spawnSpec struct {
	path string
	args []string
	env  []string
	dir  string
	// stdout receives the process's stdout: an *os.File is handed to the
	// process as is; any other writer is fed from a pipe.
	stdout io.Writer
	// watch, when non-nil, is told about every stdout chunk; it forces a pipe.
	watch *consoleWatch
	// netns, when set, is the network namespace to start the process in.
	netns string
	// closeStdout, when set, releases stdout: spawn calls it once the
	// process holds its own copy, or once the pipe feeding stdout is drained.
	closeStdout func()
}

// spawn starts the process and the goroutines that own it: one reaps it,
// the others drain its stdout and stderr pipes.
func spawn(spec spawnSpec) (*process, error) {
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Dir = spec.dir
	cmd.SysProcAttr = kunix.NewSessionAttr()

	closeStdout := spec.closeStdout
	if closeStdout == nil {
		closeStdout = func() {}
	}
	var closeAfterStart, closeOnFail []io.Closer
	fail := func(err error) (*process, error) {
		closeStdout()
		for _, c := range closeAfterStart {
			c.Close()
		}
		for _, c := range closeOnFail {
			c.Close()
		}
		return nil, err
	}

	// Stdout: a file goes to the process directly, unless it must be watched.
	var stdoutR *os.File
	if f, ok := spec.stdout.(*os.File); ok && spec.watch == nil {
		cmd.Stdout = f
	} else if spec.stdout != nil || spec.watch != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("console pipe: %w", err))
		}
		cmd.Stdout = w
		stdoutR = r
		closeAfterStart = append(closeAfterStart, w)
		closeOnFail = append(closeOnFail, r)
	}
	// Stderr always goes through our own pipe, so cmd.Wait never waits for
	// a copy that a grandchild might keep open.
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("stderr pipe: %w", err))
	}
	cmd.Stderr = stderrW
	closeAfterStart = append(closeAfterStart, stderrW)
	closeOnFail = append(closeOnFail, stderrR)

	// A child inherits the network namespace of the thread that forks it,
	// so a process for another namespace is started from a thread there.
	if err := netdev.Do(spec.netns, cmd.Start); err != nil {
		return fail(fmt.Errorf("start %s: %w", spec.path, err))
	}
	for _, c := range closeAfterStart {
		c.Close()
	}
	if stdoutR == nil {
		closeStdout() // the child has its own copy of the file
	}

	p := &process{
		pid:    cmd.Process.Pid,
		cmd:    cmd,
		stderr: newTailBuffer(stderrTailLines),
		reaped: make(chan struct{}),
		done:   make(chan struct{}),
	}
	// The start time is read while the child cannot have been reaped: only
	// the goroutine below reaps it.
	if st, err := kunix.ProcessStartTime(p.pid); err == nil {
		p.startTime = st
	}

	var drained sync.WaitGroup
	drained.Add(1)
	go func() {
		defer drained.Done()
		_, _ = io.Copy(p.stderr, stderrR)
		stderrR.Close()
	}()
	if stdoutR != nil {
		drained.Add(1)
		go func() {
			defer drained.Done()
			copyConsole(spec.stdout, stdoutR, spec.watch)
			stdoutR.Close()
			closeStdout()
		}()
	}
	go func() {
		err := cmd.Wait()
		st := ExitStatus{Code: -1, Time: time.Now()}
		if ps := cmd.ProcessState; ps != nil {
			st.Code = ps.ExitCode()
			st.Signal = kunix.ExitSignal(ps)
		} else if err != nil {
			st.Unknown = true
		}
		p.exit = st
		close(p.reaped)
		drained.Wait()
		close(p.done)
	}()
	return p, nil
}

// watchPID adopts a process that is not our child: a goroutine waits on its
// pidfd and closes done when it exits (and, if after is not nil, once after
// is closed too). The exit status is unknown. Closing the pidfd (Release)
// ends the goroutine early: done is then closed although the process runs.
func watchPID(pid int, startTime uint64, after <-chan struct{}) (*process, error) {
	fd, err := kunix.OpenPidfd(pid)
	if err != nil {
		if kunix.IsNoProcess(err) {
			return nil, fmt.Errorf("pid %d: no such process (%w)", pid, ErrNotFound)
		}
		return nil, err
	}
	// Check the start time after opening the pidfd: from now on the pidfd
	// names this process even if the PID is reused.
	st, err := kunix.ProcessStartTime(pid)
	if err != nil {
		fd.Close()
		if kunix.IsNoProcess(err) {
			return nil, fmt.Errorf("pid %d: no such process (%w)", pid, ErrNotFound)
		}
		return nil, err
	}
	if st != startTime {
		fd.Close()
		return nil, fmt.Errorf("pid %d started at tick %d, the recorded process at tick %d: process is not the one recorded (%w)",
			pid, st, startTime, ErrNotFound)
	}
	p := &process{pid: pid, startTime: startTime, pidfd: fd, done: make(chan struct{})}
	go func() {
		_ = fd.Wait() // returns on exit or when the pidfd is closed
		fd.Close()
		p.exit = ExitStatus{Code: -1, Unknown: true, Time: time.Now()}
		if after != nil {
			<-after
		}
		close(p.done)
	}()
	return p, nil
}

// copyConsole copies the console stream to w (if any) and feeds watch.
func copyConsole(w io.Writer, r io.Reader, watch *consoleWatch) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if w != nil {
				_, _ = w.Write(buf[:n]) // a failing writer must not block the guest
			}
			if watch != nil {
				watch.feed(buf[:n])
			}
		}
		if err != nil {
			if watch != nil {
				watch.close()
			}
			return
		}
	}
}

// stderrTailLines is how many of Firecracker's last stderr lines are kept.
const stderrTailLines = 20

// tailBuffer keeps the last few lines written to it.
type tailBuffer = vmmproc.Tail

func newTailBuffer(max int) *tailBuffer { return vmmproc.NewTail(max) }

// maxLineBytes bounds one kept line.
const maxLineBytes = vmmproc.MaxTailLine

// errProcessGone reports whether err from a signal means the process has
// already exited.
func errProcessGone(err error) bool {
	return errors.Is(err, os.ErrProcessDone) || errors.Is(err, os.ErrClosed) || kunix.IsNoProcess(err)
}

// jailState is the chroot a jailed VMM runs in.
type jailState struct {
	layout jailLayout
	// remove deletes the jail's tree; nil once done.
	remove func() error
	// seq numbers files staged for hot-plugged drives.
	seq int
}

// prepareJail stages the jail and builds the jailer's command line.
func (m *Machine) prepareJail(undo *cleanupStack) (spawnSpec, error) {
	layout := newJailLayout(&m.cfg)
	jailed, remove, err := stageJail(&m.cfg, layout)
	if err != nil {
		return spawnSpec{}, err
	}
	undo.push("remove jail", func(context.Context) error { return remove() })
	m.mu.Lock()
	m.jail = &jailState{layout: layout, remove: remove}
	m.api = jailed
	m.mu.Unlock()
	return spawnSpec{
		path: m.cfg.Jailer.Path,
		args: jailerArgs(&m.cfg, layout),
		dir:  m.cfg.RunDir,
	}, nil
}

// adoptJailed follows a jailer started with --new-pid-ns: the jailer forks
// Firecracker into a new PID namespace, writes its PID into the jail and
// exits, so the VMM is not our child. adoptJailed waits for the PID file,
// opens a pidfd for the PID (checked against the jail's exec name) and
// returns a process that watches it; the jailer itself is reaped.
func (m *Machine) adoptJailed(ctx context.Context, jailer *process) (*process, error) {
	pidFile := m.jail.layout.PIDFile
	delay := 100 * time.Microsecond
	for jailerGone := false; ; {
		b, err := os.ReadFile(pidFile)
		if err == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				st, err := kunix.ProcessStartTime(pid)
				if err != nil {
					return nil, fmt.Errorf("jailed firecracker (pid %d from %s): %w", pid, pidFile, err)
				}
				q, err := watchPID(pid, st, jailer.done)
				if err != nil {
					return nil, fmt.Errorf("jailed firecracker (pid %d): %w", pid, err)
				}
				q.stderr = jailer.stderr
				return q, nil
			}
		}
		if jailerGone {
			return nil, fmt.Errorf("jailer exited without writing a PID to %s: %w", pidFile, apiNeverReady(jailer))
		}
		select {
		case <-jailer.reaped:
			if !jailer.exit.Success() {
				return nil, apiNeverReady(jailer)
			}
			// The jailer exits once it has written the PID file: read it
			// once more.
			jailerGone = true
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for jailer pid file %s: %w", pidFile, ctx.Err())
		case <-time.After(delay):
			if delay < time.Millisecond {
				delay *= 2
			}
		}
	}
}
