package vmm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		max    int
		want   string
	}{
		{"empty", nil, 3, ""},
		{"one line", []string{"a\n"}, 3, "a"},
		{"partial line kept", []string{"a\nb"}, 3, "a\nb"},
		{"split writes", []string{"he", "llo\nwor", "ld\n"}, 3, "hello\nworld"},
		{"keeps the last lines", []string{"1\n2\n3\n4\n5\n"}, 3, "3\n4\n5"},
		{"blank lines dropped", []string{"a\n\n\r\nb\n"}, 3, "a\nb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTailBuffer(tt.max)
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("long line bounded", func(t *testing.T) {
		b := newTailBuffer(2)
		b.Write([]byte(strings.Repeat("x", 3*maxLineBytes) + "\n"))
		if got := len(b.String()); got != maxLineBytes {
			t.Errorf("kept %d bytes of a long line, want %d", got, maxLineBytes)
		}
	})
}

func TestExitStatusString(t *testing.T) {
	tests := []struct {
		st   ExitStatus
		want string
		ok   bool
	}{
		{ExitStatus{Code: 0}, "exit status 0", true},
		{ExitStatus{Code: 1}, "exit status 1", false},
		{ExitStatus{Code: -1, Signal: 9}, "killed by signal: killed", false},
		{ExitStatus{Code: -1, Unknown: true}, "exited (status unknown)", false},
	}
	for _, tt := range tests {
		if got := tt.st.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.st, got, tt.want)
		}
		if got := tt.st.Success(); got != tt.ok {
			t.Errorf("%+v.Success() = %v, want %v", tt.st, got, tt.ok)
		}
	}
}

// TestJailer boots the test guest under the real jailer (as root, with an
// unprivileged uid/gid and cgroup v2), then stops it and checks the jail is
// gone.
func TestJailer(t *testing.T) {
	for _, newPIDNS := range []bool{false, true} {
		name := "exec in place"
		if newPIDNS {
			name = "new pid namespace"
		}
		t.Run(name, func(t *testing.T) {
			jailer := testutil.Jailer(t)
			fc := testutil.Firecracker(t)
			testutil.CheckLeaks(t)
			base := testutil.ShortTempDir(t)
			if err := os.Chmod(base, 0o755); err != nil {
				t.Fatal(err)
			}
			// The kernel is hard-linked into the jail: keep it on base's
			// filesystem.
			kernel := filepath.Join(base, "guest.elf")
			if err := guest.WriteFile(kernel, guest.Options{Message: "jailed-guest-up", Mode: guest.Halt}); err != nil {
				t.Fatal(err)
			}
			run := filepath.Join(base, "run")
			cfg := Config{
				Firecracker: fc,
				Jailer: &JailerConfig{Path: jailer, UID: 12345, GID: 12345, ChrootBase: filepath.Join(base, "jail"),
					CgroupVersion: 2, NewPIDNS: newPIDNS},
				RunDir:       run,
				Kernel:       kernel,
				ConsolePath:  filepath.Join(base, "console.log"),
				WaitConsole:  "jailed-guest-up",
				MemoryMiB:    64,
				Placeholders: 1,
			}
			if err := os.MkdirAll(cfg.Jailer.ChrootBase, 0o755); err != nil {
				t.Fatal(err)
			}
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Start(ctx); err != nil {
				t.Fatalf("Start: %v", err)
			}
			t.Cleanup(func() { _ = m.Kill(context.Background()) })
			waitForFile(t, cfg.ConsolePath, "jailed-guest-up")
			assertInstanceState(t, m, fcapi.StateRunning)
			st := m.State()
			if st.JailDir == "" || !strings.HasPrefix(m.SocketPath(), st.JailDir) {
				t.Errorf("state jail %q, socket %q", st.JailDir, m.SocketPath())
			}
			pid, start := m.PID()
			names, err := kunix.ThreadNames(pid)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("jailed pid %d, threads %v", pid, names)
			if tids, err := m.VCPUThreads(ctx); err != nil || len(tids) != 1 {
				t.Errorf("VCPUThreads = %v, %v", tids, err)
			}
			// Hot-plug through the jail.
			disk := filepath.Join(base, "disk.img")
			if err := os.WriteFile(disk, make([]byte, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := m.AttachDrive(ctx, Drive{Path: disk, ReadOnly: true}); err != nil {
				t.Errorf("AttachDrive in a jail: %v", err)
			}
			// Another process could take over from the recorded state.
			a, err := Attach(ctx, st)
			if err != nil {
				t.Fatalf("Attach to the jailed VMM: %v", err)
			}
			if err := a.Pause(ctx); err != nil {
				t.Errorf("Pause through the attachment: %v", err)
			} else if err := a.Resume(ctx); err != nil {
				t.Errorf("Resume through the attachment: %v", err)
			}
			if err := a.Release(); err != nil {
				t.Fatal(err)
			}

			// Snapshot out of the jail, and restore into a new jail.
			snap, err := m.CreateSnapshot(ctx, SnapshotOptions{Dir: filepath.Join(base, "snap"), PauseAround: true})
			if err != nil {
				t.Fatalf("CreateSnapshot of a jailed VMM: %v", err)
			}
			rcfg := Config{Firecracker: fc, Jailer: cfg.Jailer, RunDir: filepath.Join(base, "run2")}
			r, err := Restore(ctx, RestoreConfig{Snapshot: snap, Config: rcfg, Resume: true})
			if err != nil {
				t.Fatalf("Restore into a jail: %v", err)
			}
			assertInstanceState(t, r, fcapi.StateRunning)
			if pool := r.Pool(); len(pool) != 1 || pool[0].Drive == nil {
				t.Errorf("restored pool %+v, want the attached drive", pool)
			}
			rst := r.State()
			rpid, rstart := r.PID()
			if err := r.Stop(ctx); err != nil {
				t.Fatalf("Stop restored: %v", err)
			}
			assertExited(t, rpid, rstart, newPIDNS)
			if _, err := os.Stat(rst.JailDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("restored jail %s left behind: %v", rst.JailDir, err)
			}

			began := time.Now()
			if err := m.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			t.Logf("Stop took %v", time.Since(began))
			assertExited(t, pid, start, newPIDNS)
			if _, err := os.Stat(st.JailDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("jail %s left behind: %v", st.JailDir, err)
			}
			// The log outlives the jail, at the Config's LogPath.
			if b, err := os.ReadFile(filepath.Join(run, "firecracker.log")); err != nil || !strings.Contains(string(b), "Running Firecracker") {
				t.Errorf("the jailed VMM's log was not kept in RunDir: %v, %q", err, b)
			}
		})
	}
}

// assertExited checks that process pid (started at start) is gone. A
// process that is not our child (orphanedOK) may linger as a zombie until
// its new parent, the host's init, reaps it: that is accepted, and logged.
func assertExited(t *testing.T, pid int, start uint64, orphanedOK bool) {
	t.Helper()
	got, err := kunix.ProcessStartTime(pid)
	if err != nil || got != start {
		return
	}
	stat, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if orphanedOK && len(fields) > 1 && fields[0] == "Z" && fields[1] != strconv.Itoa(os.Getpid()) {
		t.Logf("process %d is a zombie of pid %s (not ours to reap)", pid, fields[1])
		return
	}
	t.Errorf("process %d still exists: %s", pid, stat)
}
