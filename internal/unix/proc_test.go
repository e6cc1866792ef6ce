package unix

import (
	"os"
	"runtime"
	"testing"
)

func TestParseStartTime(t *testing.T) {
	tail := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21\n"
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{name: "plain", stat: "123 (firecracker)" + tail, want: 424242},
		{name: "spaces in comm", stat: "123 (fc vcpu 0)" + tail, want: 424242},
		{name: "parens in comm", stat: "123 (a) (b) S 9)" + tail, want: 424242},
		{name: "empty comm", stat: "123 ()" + tail, want: 424242},
		{name: "no comm", stat: "123 firecracker" + tail, wantErr: true},
		{name: "truncated", stat: "123 (x) S 1 2 3", wantErr: true},
		{name: "not a number", stat: "123 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 abc 20", wantErr: true},
		{name: "empty", stat: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStartTime(%q) error = %v, wantErr %v", tt.stat, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStartTime(%q) = %d, want %d", tt.stat, got, tt.want)
			}
		})
	}
}

func FuzzParseStartTime(f *testing.F) {
	f.Add([]byte("1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99 20"))
	f.Add([]byte("1 ((() S"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStartTime(b) // must not panic
	})
}

func TestProcessStartTime(t *testing.T) {
	t.Run("self", func(t *testing.T) {
		st, err := ProcessStartTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if st == 0 {
			t.Fatal("start time of this process is 0")
		}
		again, err := ProcessStartTime(os.Getpid())
		if err != nil || again != st {
			t.Fatalf("second read = %d, %v; want %d", again, err, st)
		}
	})
	t.Run("parent started earlier", func(t *testing.T) {
		self, err := ProcessStartTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		parent, err := ProcessStartTime(os.Getppid())
		if err != nil {
			t.Fatal(err)
		}
		if parent > self {
			t.Fatalf("parent start time %d after ours %d", parent, self)
		}
	})
	for _, pid := range []int{0, -1, 1 << 30} {
		t.Run("missing", func(t *testing.T) {
			if _, err := ProcessStartTime(pid); !IsNoProcess(err) {
				t.Fatalf("ProcessStartTime(%d) error = %v, want ErrNoProcess", pid, err)
			}
		})
	}
}

func TestThreadNames(t *testing.T) {
	done := make(chan struct{})
	ready := make(chan int)
	go func() {
		runtime.LockOSThread() // never unlocked: the renamed thread dies with the goroutine
		if err := SetThreadName("kindling test thread name"); err != nil {
			t.Error(err)
		}
		ready <- Gettid()
		<-done
	}()
	tid := <-ready
	defer close(done)

	names, err := ThreadNames(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The kernel keeps 15 bytes.
	if got, want := names[tid], "kindling test t"; got != want {
		t.Errorf("thread %d is named %q, want %q", tid, got, want)
	}
	if _, ok := names[os.Getpid()]; !ok {
		t.Errorf("main thread %d missing from %v", os.Getpid(), names)
	}
	if _, err := ThreadNames(1 << 30); !IsNoProcess(err) {
		t.Errorf("ThreadNames of a missing pid: error = %v, want ErrNoProcess", err)
	}
}
