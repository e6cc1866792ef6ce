package unix

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Pidfd is an open pidfd registered with the Go runtime's poller, so that
// waiting on it parks a goroutine instead of an OS thread and Close wakes
// the waiter. Use it for processes that are not the caller's children;
// os.Process already uses pidfds for children.
type Pidfd struct {
	f *os.File
}

// OpenPidfd opens a pidfd for pid.
func OpenPidfd(pid int) (*Pidfd, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pidfd open %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("pidfd open %d: %w", pid, err)
	}
	unix.CloseOnExec(fd)
	return &Pidfd{f: os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))}, nil
}

// Signal sends sig to the process. An exited process gives an error
// matching ErrNoProcess (or os.ErrClosed after Close).
func (p *Pidfd) Signal(sig Signal) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("pidfd send signal %v: %w", sig, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = PidfdSendSignal(int(fd), sig) }); err != nil {
		// Control fails only once the file is closed (its error, "use of
		// closed file", is not os.ErrClosed): say so in a way callers match.
		return fmt.Errorf("pidfd send signal %v: %w (%v)", sig, os.ErrClosed, err)
	}
	return serr
}

// Exited reports, without blocking, whether the process has exited.
func (p *Pidfd) Exited() (bool, error) {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return false, err
	}
	var exited bool
	var perr error
	if err := rc.Control(func(fd uintptr) { exited, perr = PidfdWait(int(fd), 0) }); err != nil {
		return false, fmt.Errorf("pidfd wait: %w (%v)", os.ErrClosed, err)
	}
	return exited, perr
}

// Wait blocks until the process exits (nil) or p is closed (an error
// matching os.ErrClosed). It cannot reap: the process is not a child.
func (p *Pidfd) Wait() error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("wait on pidfd: %w", err)
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var exited bool
		exited, perr = PidfdWait(int(fd), 0)
		return exited || perr != nil
	})
	if err != nil {
		// No deadline is ever set, so the only way out is Close.
		return fmt.Errorf("wait on pidfd: %w (%v)", os.ErrClosed, err)
	}
	return perr
}

// Close releases the pidfd and wakes a blocked Wait.
func (p *Pidfd) Close() error { return p.f.Close() }

// NewSessionAttr returns process attributes that start a child in its own
// session, so signals sent to the parent's terminal (Ctrl-C) do not reach it.
func NewSessionAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}

// ExitSignal returns the signal that killed the process whose state is ps,
// or 0 when it exited normally.
func ExitSignal(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int(ws.Signal())
	}
	return 0
}

// SignalName returns the conventional name of a signal number, such as
// "killed" for 9 (as strsignal does).
func SignalName(sig int) string { return syscall.Signal(sig).String() }
