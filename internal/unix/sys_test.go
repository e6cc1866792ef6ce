package unix

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestPidfd(t *testing.T) {
	tests := []struct {
		name string
		sig  Signal
	}{
		{name: "SIGTERM", sig: SIGTERM},
		{name: "SIGKILL", sig: SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Skipf("no sleep executable: %v", err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

			fd, err := PidfdOpen(cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			defer Close(fd)

			exited, err := PidfdWait(fd, 10*time.Millisecond)
			if err != nil || exited {
				t.Fatalf("PidfdWait on a live process = %v, %v; want false, nil", exited, err)
			}
			if err := PidfdSendSignal(fd, tt.sig); err != nil {
				t.Fatal(err)
			}
			exited, err = PidfdWait(fd, 5*time.Second)
			if err != nil || !exited {
				t.Fatalf("PidfdWait after %v = %v, %v; want true, nil", tt.sig, exited, err)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Wait = %v, want an exit error", err)
			}
			if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.Signal(tt.sig) {
				t.Fatalf("child exit = %v, want killed by %v", ws, tt.sig)
			}
			// Reaped: signalling through the pidfd now says the process is gone.
			if err := PidfdSendSignal(fd, SIGKILL); !IsNoProcess(err) {
				t.Fatalf("signal to a reaped process: %v, want ErrNoProcess", err)
			}
		})
	}
	t.Run("missing pid", func(t *testing.T) {
		if _, err := PidfdOpen(1 << 30); !IsNoProcess(err) {
			t.Fatalf("PidfdOpen of a missing pid: %v, want ErrNoProcess", err)
		}
	})
}

func TestSetThreadNameInvalid(t *testing.T) {
	if err := SetThreadName("a\x00b"); err == nil {
		t.Fatal("SetThreadName with a NUL byte succeeded")
	}
}

func TestPidfdFile(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep executable: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p, err := OpenPidfd(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	if exited, err := p.Exited(); err != nil || exited {
		t.Fatalf("Exited on a live process = %v, %v", exited, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- p.Wait() }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v before the process exited", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := p.Signal(SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after SIGKILL")
	}
	if exited, err := p.Exited(); err != nil || !exited {
		t.Fatalf("Exited after kill = %v, %v", exited, err)
	}
	_ = cmd.Wait()
	if err := p.Signal(SIGTERM); !IsNoProcess(err) {
		t.Fatalf("Signal to a reaped process = %v, want ErrNoProcess", err)
	}
	if ExitSignal(cmd.ProcessState) != int(SIGKILL) {
		t.Fatalf("ExitSignal = %d, want %d", ExitSignal(cmd.ProcessState), SIGKILL)
	}
}

func TestPidfdCloseWakesWait(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep executable: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p, err := OpenPidfd(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- p.Wait() }()
	time.Sleep(10 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Wait after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Wait")
	}
}

func TestPidfdSignalAfterClose(t *testing.T) {
	p, err := OpenPidfd(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := p.Signal(0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Signal after Close = %v; want an error matching os.ErrClosed", err)
	}
}
