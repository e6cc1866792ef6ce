package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shortSettle makes CheckLeaks give up sooner, so that the tests that leak on
// purpose do not each take two seconds.
func shortSettle(t *testing.T) {
	old := settleTimeout
	settleTimeout = 300 * time.Millisecond
	t.Cleanup(func() { settleTimeout = old })
}

func TestCheckLeaksClean(t *testing.T) {
	shortSettle(t)
	tests := []struct {
		name string
		body func(t *testing.T, tb testing.TB)
	}{
		{"nothing", func(t *testing.T, tb testing.TB) {}},
		{"child reaped", func(t *testing.T, tb testing.TB) {
			if err := exec.Command("true").Run(); err != nil {
				t.Fatal(err)
			}
		}},
		{"file closed", func(t *testing.T, tb testing.TB) {
			f, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}},
		{"goroutine ends soon after", func(t *testing.T, tb testing.TB) {
			go time.Sleep(50 * time.Millisecond)
		}},
		{"child reaped by a later cleanup", func(t *testing.T, tb testing.TB) {
			cmd := exec.Command("sleep", "0.05")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			tb.Cleanup(func() { _ = cmd.Wait() })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder(t)
			r.Run(func(tb testing.TB) {
				CheckLeaks(tb)
				tt.body(t, tb)
			})
			if r.Failed() {
				t.Fatalf("CheckLeaks reported a leak:\n%s", r.report())
			}
		})
	}
}

func TestCheckLeaksChild(t *testing.T) {
	shortSettle(t)
	tests := []struct {
		name      string
		argv      []string
		wantState string
	}{
		{"running", []string{"sleep", "30"}, "S"},
		{"zombie", []string{"true"}, "Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cmd *exec.Cmd
			r := newRecorder(t)
			r.Run(func(tb testing.TB) {
				CheckLeaks(tb)
				cmd = exec.Command(tt.argv[0], tt.argv[1:]...)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				})
			})
			want := fmt.Sprintf("leaked child process: pid %d comm %q state %s", cmd.Process.Pid, tt.argv[0], tt.wantState)
			if !strings.Contains(r.report(), want) {
				t.Fatalf("report does not hold %q:\n%s", want, r.report())
			}
			// The process handle's pidfd leaks with the child.
			if !strings.Contains(r.report(), "anon_inode:[pidfd]") {
				t.Logf("no pidfd reported (old kernel or Go?):\n%s", r.report())
			}
			// A live leaked child is killed, a zombie left to its owner.
			err := cmd.Wait()
			var ee *exec.ExitError
			switch tt.wantState {
			case "S":
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("leaked child not killed: Wait = %v", err)
				}
			case "Z":
				if err != nil {
					t.Fatalf("zombie reaped as %v, want a clean exit", err)
				}
			}
		})
	}
}

func TestCheckLeaksFD(t *testing.T) {
	shortSettle(t)
	path := filepath.Join(t.TempDir(), "leaky")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var f *os.File
	r := newRecorder(t)
	r.Run(func(tb testing.TB) {
		CheckLeaks(tb)
		var err error
		if f, err = os.Open(path); err != nil {
			t.Fatal(err)
		}
	})
	defer f.Close()
	want := fmt.Sprintf("leaked file descriptor: fd %d -> %s", f.Fd(), path)
	if !strings.Contains(r.report(), want) {
		t.Fatalf("report does not hold %q:\n%s", want, r.report())
	}
	if strings.Contains(r.report(), "child process") || strings.Contains(r.report(), "goroutines") {
		t.Fatalf("report blames more than the descriptor:\n%s", r.report())
	}
}

func leakyGoroutineForTest(stop chan struct{}) { <-stop }

func TestCheckLeaksGoroutine(t *testing.T) {
	shortSettle(t)
	stop := make(chan struct{})
	defer close(stop)
	r := newRecorder(t)
	r.Run(func(tb testing.TB) {
		CheckLeaks(tb)
		go leakyGoroutineForTest(stop)
	})
	if !regexp.MustCompile(`leaked goroutines: 1 started during the test`).MatchString(r.report()) {
		t.Fatalf("goroutine leak not reported:\n%s", r.report())
	}
	if !strings.Contains(r.report(), "leakyGoroutineForTest") {
		t.Fatalf("goroutine dump does not show the leaked goroutine:\n%s", r.report())
	}
}

func TestReadChildOfOddComm(t *testing.T) {
	// A comm with spaces and parentheses must not shift the fields.
	dir := t.TempDir()
	exe := filepath.Join(dir, "a) b (c")
	if err := os.Symlink("/bin/sleep", exe); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	c, ok := readChild(cmd.Process.Pid)
	if !ok {
		t.Fatal("child not found")
	}
	if c.comm != "a) b (c" || c.pid != cmd.Process.Pid || c.start == 0 {
		t.Fatalf("readChild = %+v", c)
	}
	if _, ok := readChildOf(cmd.Process.Pid, os.Getpid()+1); ok {
		t.Fatal("readChildOf accepted the wrong parent")
	}
}
