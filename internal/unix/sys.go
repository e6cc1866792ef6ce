package unix

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Signal is a Unix signal number, re-exported so callers need not import
// golang.org/x/sys/unix.
type Signal = unix.Signal

// Signals used by kindling.
const (
	SIGKILL = unix.SIGKILL
	SIGTERM = unix.SIGTERM
	SIGCONT = unix.SIGCONT
	SIGSTOP = unix.SIGSTOP
)

var errESRCH = unix.ESRCH

// SetThreadName sets the name (comm) of the calling OS thread; names longer
// than 15 bytes are truncated by the kernel. Callers normally lock the
// goroutine to its thread first (runtime.LockOSThread).
func SetThreadName(name string) error {
	b, err := unix.BytePtrFromString(name)
	if err != nil {
		return fmt.Errorf("set thread name %q: %w", name, err)
	}
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(b)), 0, 0, 0); err != nil {
		return fmt.Errorf("set thread name %q: %w", name, err)
	}
	return nil
}

// Gettid returns the calling thread's ID.
func Gettid() int { return unix.Gettid() }

// PidfdOpen returns a pidfd (close-on-exec) referring to process pid. The
// pidfd keeps naming that process even if its PID is later reused.
func PidfdOpen(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, fmt.Errorf("pidfd open %d: %w", pid, ErrNoProcess)
		}
		return -1, fmt.Errorf("pidfd open %d: %w", pid, err)
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

// PidfdSendSignal sends sig to the process fd refers to. A process that has
// exited (even if not yet reaped) gives an error matching ErrNoProcess.
func PidfdSendSignal(fd int, sig Signal) error {
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pidfd send signal %v: %w", sig, ErrNoProcess)
		}
		return fmt.Errorf("pidfd send signal %v: %w", sig, err)
	}
	return nil
}

// PidfdWait blocks until the process fd refers to has exited or timeout
// passes (a negative timeout waits forever), and reports whether it exited.
// It works for processes that are not the caller's children, which it cannot
// reap: their exit status is not available.
func PidfdWait(fd int, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		ms := -1
		if timeout >= 0 {
			left := time.Until(deadline)
			if left < 0 {
				left = 0
			}
			ms = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return false, fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return true, nil
		}
		if timeout >= 0 && !time.Now().Before(deadline) {
			return false, nil
		}
	}
}

// Close closes a file descriptor such as a pidfd.
func Close(fd int) error { return unix.Close(fd) }

// Kill sends sig to pid directly. Prefer a pidfd; this exists for processes
// whose PID was just read from a file and checked with ProcessStartTime.
func Kill(pid int, sig Signal) error {
	if err := unix.Kill(pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %d: %w", pid, ErrNoProcess)
		}
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	return nil
}

// ClockTicks is the unit of ProcessStartTime (USER_HZ), 100 on Linux.
const ClockTicks = 100

// IsNoProcess reports whether err says a process does not exist.
func IsNoProcess(err error) bool {
	return errors.Is(err, ErrNoProcess) || errors.Is(err, unix.ESRCH) || errors.Is(err, os.ErrProcessDone)
}

// IsConnRefused reports whether err is a refused connection (ECONNREFUSED):
// on a Unix socket, a socket file nobody listens on any more.
func IsConnRefused(err error) bool { return errors.Is(err, unix.ECONNREFUSED) }
