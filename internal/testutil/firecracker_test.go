package testutil

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("x", 400) {
		t.Fatalf("buffer holds %d bytes, want 400", len(got))
	}
}

func TestStartVMM(t *testing.T) {
	tests := []struct {
		name    string
		cfg     VMMConfig
		wantLog bool
	}{
		{"plain", VMMConfig{}, false},
		{"log file", VMMConfig{LogFile: true}, true},
		{"own dir and env", VMMConfig{Dir: ShortTempDir(t), Env: []string{`FAKEFC={"stderr":"hello from env"}`}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			cfg := tt.cfg
			cfg.Path = FakeFirecracker(t)
			r := newRecorder(t)
			var v *VMM
			r.Run(func(tb testing.TB) {
				v = StartVMM(tb, cfg)
				c, err := net.Dial("unix", v.Sock)
				if err != nil {
					tb.Fatalf("API socket not ready on return: %v", err)
				}
				c.Close()
				if v.Exited() {
					tb.Fatalf("process ended: %v", v.State())
				}
				if cfg.Dir != "" && v.Dir != cfg.Dir {
					tb.Errorf("Dir = %q, want %q", v.Dir, cfg.Dir)
				}
				if _, err := os.Stat(v.LogPath); (err == nil) != tt.wantLog {
					tb.Errorf("log file %q: %v, want it there: %v", v.LogPath, err, tt.wantLog)
				}
				if len(cfg.Env) > 0 {
					deadline := time.Now().Add(5 * time.Second)
					for !strings.Contains(v.Stderr.String(), "hello from env") {
						if time.Now().After(deadline) {
							tb.Fatalf("stderr %q: the environment did not reach the process", v.Stderr)
						}
						time.Sleep(time.Millisecond)
					}
				}
			})
			if r.Failed() {
				t.Fatal(r.report())
			}
			if !v.Exited() {
				t.Fatal("process still running after cleanup")
			}
			if _, err := os.Stat(v.Sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("API socket still there after cleanup: %v", err)
			}
		})
	}
}

func TestStartVMMEarlyExit(t *testing.T) {
	tests := []struct {
		name     string
		noWait   bool
		wantFail bool
	}{
		{"wait fails the test", false, true},
		{"no wait", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			cfg := VMMConfig{Path: FakeFirecracker(t), Args: []string{"--bogus"}, NoWait: tt.noWait}
			r := newRecorder(t)
			var v *VMM
			r.Run(func(tb testing.TB) {
				v = StartVMM(tb, cfg)
				select {
				case <-v.Done():
				case <-time.After(10 * time.Second):
					tb.Fatal("process still running with a bad flag")
				}
				var ee *exec.ExitError
				if !errors.As(v.WaitErr(), &ee) {
					tb.Errorf("WaitErr = %v, want an exit error", v.WaitErr())
				}
			})
			if r.Failed() != tt.wantFail {
				t.Fatalf("failed = %v, want %v: %s", r.Failed(), tt.wantFail, r.report())
			}
			if tt.wantFail && !strings.Contains(r.report(), "exited before serving its API") {
				t.Errorf("failure %q does not say the process exited", r.report())
			}
		})
	}
}
