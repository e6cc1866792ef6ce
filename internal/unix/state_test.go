package unix

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseState(t *testing.T) {
	tests := []struct {
		in   string
		want byte
		ok   bool
	}{
		{"1 (init) S 0 1", 'S', true},
		{"42 (a) (b) Z 1 2", 'Z', true},
		{"7 (sp ace)) R 1", 'R', true},
		{"7 (x)", 0, false},
		{"garbage", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseState([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseState(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte("1 (init) S 0"))
	f.Fuzz(func(t *testing.T, b []byte) { parseState(b) })
}

func TestProcessStateZombie(t *testing.T) {
	// The main thread of this process runs or sleeps, depending on timing.
	if st, err := ProcessState(os.Getpid()); err != nil || (st != 'R' && st != 'S') {
		t.Fatalf("ProcessState(self) = %q, %v; want 'R' or 'S'", st, err)
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	// Not reaped yet: once it has exited it must show as a zombie.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		st, err := ProcessState(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if st == 'Z' {
			return
		}
	}
	t.Fatal("an exited, unreaped child never showed state Z")
}

func TestReadStat(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start, err := ProcessStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPid != os.Getppid() || st.StartTime != start || st.Comm == "" {
		t.Fatalf("ReadStat(self) = %+v; want ppid %d, start time %d and a name", st, os.Getppid(), start)
	}
	if _, err := ReadStat(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("ReadStat of a missing pid: %v, want ErrNoProcess", err)
	}
}
