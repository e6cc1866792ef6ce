package vmm

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// TestStop stops VMMs in different states; each must end reaped, with its
// socket removed, within the deadline.
func TestStop(t *testing.T) {
	tests := []struct {
		name string
		// settings for the fake; the real Firecracker ignores them.
		settings string
		// prepare puts the VMM in the state to stop from.
		prepare func(t *testing.T, m *Machine)
		grace   time.Duration
	}{
		{name: "running", grace: DefaultStopGrace, prepare: func(*testing.T, *Machine) {}},
		{name: "running no grace", grace: 0, prepare: func(*testing.T, *Machine) {}},
		{name: "paused", grace: DefaultStopGrace, prepare: func(t *testing.T, m *Machine) {
			if err := m.Pause(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "sigstopped", grace: 100 * time.Millisecond, prepare: func(t *testing.T, m *Machine) {
			pid, _ := m.PID()
			if err := kunix.Kill(pid, kunix.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "ignores ctrl-alt-del and sigterm", settings: `{"ctrl_alt_del":"ignore","ignore_sigterm":true}`,
			grace: 100 * time.Millisecond, prepare: func(*testing.T, *Machine) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backends(t, tt.settings, func(t *testing.T, b backend) {
				m, err := New(testConfig(t, b, "stop", guest.Halt), WithStopGrace(tt.grace))
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = m.Kill(context.Background()) })
				tt.prepare(t, m)
				pid, st := m.PID()

				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				began := time.Now()
				if err := m.Stop(ctx); err != nil {
					t.Fatalf("Stop: %v", err)
				}
				t.Logf("Stop took %v", time.Since(began))
				assertGone(t, m, pid, st)
				es, _ := m.Wait(ctx)
				t.Logf("exit: %v", es)
				if !b.real && tt.name == "running" && !es.Success() {
					// The fake's guest powers off on Ctrl-Alt-Del.
					t.Errorf("exit status %v, want 0 after Ctrl-Alt-Del", es)
				}
				// Idempotent.
				if err := m.Stop(ctx); err != nil {
					t.Errorf("second Stop: %v", err)
				}
			})
		})
	}
}

// assertGone checks the VMM process has exited and been reaped.
func assertGone(t *testing.T, m *Machine, pid int, startTime uint64) {
	t.Helper()
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed")
	}
	if got, err := kunix.ProcessStartTime(pid); err == nil && got == startTime {
		t.Errorf("process %d still exists (a zombie?) after Stop", pid)
	}
	if _, err := os.Lstat(m.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket still there: %v", err)
	}
	if _, err := m.Wait(context.Background()); err != nil {
		t.Errorf("Wait after Stop: %v", err)
	}
}

// TestStopExited stops a VMM that has already died: Stop must return at
// once (it waits for nothing) and tidy up.
func TestStopExited(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		m := startMachine(t, testConfig(t, b, "dead", guest.Halt))
		pid, st := m.PID()
		if err := kunix.Kill(pid, kunix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		es, err := m.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if es.Signal != int(kunix.SIGKILL) || es.Success() {
			t.Errorf("exit status %v, want killed by SIGKILL", es)
		}
		began := time.Now()
		if err := m.Stop(context.Background()); err != nil {
			t.Fatalf("Stop of a dead VMM: %v", err)
		}
		took := time.Since(began)
		t.Logf("Stop of a dead VMM took %v", took)
		assertGone(t, m, pid, st)
		if err := m.Pause(context.Background()); !errors.Is(err, ErrExited) {
			t.Errorf("Pause after exit: %v, want ErrExited", err)
		}
	})
}

func TestKill(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		m := startMachine(t, testConfig(t, b, "kill", guest.Halt))
		pid, st := m.PID()
		if err := m.Kill(context.Background()); err != nil {
			t.Fatal(err)
		}
		assertGone(t, m, pid, st)
		es, _ := m.Wait(context.Background())
		if es.Signal != int(kunix.SIGKILL) {
			t.Errorf("exit status %v, want SIGKILL", es)
		}
	})
}

func TestStopBeforeStart(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	m, err := New(testConfig(t, b, "x", guest.Halt))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Stop before Start: %v, want ErrNotRunning", err)
	}
	if _, err := m.Wait(context.Background()); !errors.Is(err, ErrInvalidState) {
		t.Errorf("Wait before Start: %v, want ErrInvalidState", err)
	}
}
