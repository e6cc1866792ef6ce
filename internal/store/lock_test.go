package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestLock(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, s *Store)
	}{
		{"TryLock while held", func(t *testing.T, s *Store) {
			l := mustLock(t, s, "a")
			defer l.Unlock()
			if _, err := s.TryLock("a"); !errors.Is(err, ErrLocked) {
				t.Fatalf("TryLock = %v, want ErrLocked", err)
			}
		}},
		{"Lock times out while held", func(t *testing.T, s *Store) {
			l := mustLock(t, s, "a")
			defer l.Unlock()
			ctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := s.Lock(ctx, "a")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Lock = %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Lock returned %v after its deadline", d)
			}
		}},
		{"Lock waits for Unlock", func(t *testing.T, s *Store) {
			l := mustLock(t, s, "a")
			time.AfterFunc(20*time.Millisecond, l.Unlock)
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			l2, err := s.Lock(ctx, "a")
			if err != nil {
				t.Fatalf("Lock: %v", err)
			}
			l2.Unlock()
		}},
		{"Unlock twice", func(t *testing.T, s *Store) {
			l := mustLock(t, s, "a")
			l.Unlock()
			l.Unlock()
			mustLock(t, s, "a").Unlock()
		}},
		{"other sandboxes independent", func(t *testing.T, s *Store) {
			mustCreate(t, s, "b", record{})
			l := mustLock(t, s, "a")
			defer l.Unlock()
			mustLock(t, s, "b").Unlock()
		}},
		{"cancelled context", func(t *testing.T, s *Store) {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.Lock(ctx, "a"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Lock = %v, want Canceled", err)
			}
		}},
		{"missing sandbox leaves no lock file", func(t *testing.T, s *Store) {
			for _, lock := range []func() (*Locked, error){
				func() (*Locked, error) { return s.Lock(ctx, "nope") },
				func() (*Locked, error) { return s.TryLock("nope") },
			} {
				if _, err := lock(); !errors.Is(err, ErrNotFound) {
					t.Fatalf("lock = %v, want ErrNotFound", err)
				}
			}
			if _, err := os.Lstat(s.lockPath("nope")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("lock file of a missing sandbox left (%v)", err)
			}
		}},
		{"invalid ID", func(t *testing.T, s *Store) {
			if _, err := s.TryLock(".."); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("TryLock(..) = %v, want ErrInvalidID", err)
			}
		}},
		{"handle accessors", func(t *testing.T, s *Store) {
			l := mustLock(t, s, "a")
			defer l.Unlock()
			if l.ID() != "a" || l.Dir() != s.dir("a") {
				t.Errorf("ID, Dir = %q, %q", l.ID(), l.Dir())
			}
			var r record
			if err := l.Load(&r); err != nil || r.Name != "a" {
				t.Errorf("Load = %+v, %v", r, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			s := newStore(t)
			mustCreate(t, s, "a", record{Name: "a"})
			tt.run(t, s)
		})
	}
}

func mustLock(t *testing.T, s *Store, id string) *Locked {
	t.Helper()
	l, err := s.TryLock(id)
	if err != nil {
		t.Fatalf("TryLock(%q): %v", id, err)
	}
	return l
}

// Environment of the helper process.
const (
	envHelper = "KINDLING_STORE_HELPER" // what to do: hold, count, create
	envRoot   = "KINDLING_STORE_ROOT"
	envN      = "KINDLING_STORE_N"
)

// Exit codes of the helper process.
const (
	exitExists   = 3 // create lost with ErrExists
	exitOverlap  = 4 // two holders inside the lock at once
	exitHelpFail = 1
)

// TestHelperProcess is not a test: the other tests run the test binary again
// with -test.run=TestHelperProcess and envHelper set, to get another process
// using the same store.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		t.Skip("helper process for the cross-process tests")
	}
	os.Exit(helper(mode))
}

func helper(mode string) int {
	ctx := context.Background()
	s, err := Open(os.Getenv(envRoot))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitHelpFail
	}
	switch mode {
	case "hold": // lock "a", say so, hold until stdin closes
		l, err := s.Lock(ctx, "a")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return exitHelpFail
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		l.Unlock()
		return 0
	case "count": // n updates of "a", checking nobody else is inside
		n, _ := strconv.Atoi(os.Getenv(envN))
		marker := filepath.Join(s.dir("a"), "inside")
		for range n {
			var r record
			err := s.Update(ctx, "a", &r, func() error {
				f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("%w: %v", errOverlap, err)
				}
				f.Close()
				r.Count++
				time.Sleep(100 * time.Microsecond)
				return os.Remove(marker)
			})
			if errors.Is(err, errOverlap) {
				fmt.Fprintln(os.Stderr, err)
				return exitOverlap
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return exitHelpFail
			}
		}
		return 0
	case "create":
		err := s.Create(ctx, "a", record{Count: os.Getpid()})
		switch {
		case err == nil:
			return 0
		case errors.Is(err, ErrExists):
			return exitExists
		}
		fmt.Fprintln(os.Stderr, err)
		return exitHelpFail
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return exitHelpFail
}

var errOverlap = errors.New("another holder inside the lock")

func helperCmd(t *testing.T, s *Store, mode string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envRoot+"="+s.Root())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// startHolder runs a helper that holds the lock on "a" and returns once it
// does, with the pipe that releases it when closed.
func startHolder(t *testing.T, s *Store) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := helperCmd(t, s, "hold")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	return cmd, stdin
}

func TestLockAcrossProcesses(t *testing.T) {
	t.Run("excludes while held", func(t *testing.T) {
		testutil.CheckLeaks(t)
		s := newStore(t)
		mustCreate(t, s, "a", record{})
		cmd, release := startHolder(t, s)
		if _, err := s.TryLock("a"); !errors.Is(err, ErrLocked) {
			t.Fatalf("TryLock while another process holds it = %v, want ErrLocked", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := s.Lock(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock = %v, want DeadlineExceeded", err)
		}
		release.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := s.Lock(ctx, "a")
		if err != nil {
			t.Fatalf("Lock after release: %v", err)
		}
		l.Unlock()
	})
	t.Run("released when holder is killed", func(t *testing.T) {
		testutil.CheckLeaks(t)
		s := newStore(t)
		mustCreate(t, s, "a", record{})
		cmd, _ := startHolder(t, s)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := s.Lock(ctx, "a")
		if err != nil {
			t.Fatalf("Lock after holder was killed: %v", err)
		}
		l.Unlock()
	})
	t.Run("serialises updates", func(t *testing.T) {
		testutil.CheckLeaks(t)
		s := newStore(t)
		mustCreate(t, s, "a", record{})
		const procs, n = 4, 50
		var cmds []*exec.Cmd
		for range procs {
			cmd := helperCmd(t, s, "count", envN+"="+strconv.Itoa(n))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		for _, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Errorf("helper: %v (exit code %d = overlap)", err, exitOverlap)
			}
		}
		var r record
		if err := s.Load("a", &r); err != nil || r.Count != procs*n {
			t.Fatalf("Load = %+v, %v, want count %d", r, err, procs*n)
		}
	})
	t.Run("one create wins", func(t *testing.T) {
		testutil.CheckLeaks(t)
		s := newStore(t)
		const procs = 8
		var cmds []*exec.Cmd
		for range procs {
			cmd := helperCmd(t, s, "create")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		won := 0
		for _, cmd := range cmds {
			err := cmd.Wait()
			var ee *exec.ExitError
			switch {
			case err == nil:
				won++
			case errors.As(err, &ee) && ee.ExitCode() == exitExists:
			default:
				t.Errorf("helper: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d creates won, want 1", won)
		}
	})
}

func TestLockFileReplacedBeforeFlock(t *testing.T) {
	// Between opening the lock file and flocking it, a holder removes the
	// sandbox (unlinking the file) and another command re-creates and locks
	// it. Lock must not settle for the unlinked file: that would make two
	// holders.
	testutil.CheckLeaks(t)
	s := newStore(t)
	mustCreate(t, s, "a", record{})
	var other *Locked
	defer func() {
		if other != nil {
			other.Unlock()
		}
	}()
	testHookLockOpened = func() {
		testHookLockOpened = nil
		if err := os.Remove(s.lockPath("a")); err != nil {
			t.Fatal(err)
		}
		other = mustLock(t, s, "a")
	}
	defer func() { testHookLockOpened = nil }()
	l, err := s.TryLock("a")
	if err == nil {
		l.Unlock()
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock = %v, want ErrLocked (another command holds the current lock file)", err)
	}
	if other == nil {
		t.Fatal("the hook did not run")
	}
}

func TestLockExclusiveUnderRemoveAndCreate(t *testing.T) {
	// Goroutines lock, remove and re-create one sandbox in a loop: whatever
	// the interleaving, never two of them hold its lock at once.
	testutil.CheckLeaks(t)
	ctx := context.Background()
	s := newStore(t)
	mustCreate(t, s, "a", record{})
	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; i < 30; {
				l, err := s.Lock(ctx, "a")
				if errors.Is(err, ErrNotFound) {
					if err := s.Create(ctx, "a", record{}); err != nil && !errors.Is(err, ErrExists) {
						t.Error(err)
						return
					}
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(50 * time.Microsecond)
				var rerr error
				if (g+i)%3 == 0 {
					rerr = l.Remove()
					time.Sleep(50 * time.Microsecond) // tear down the rest
				}
				inside.Add(-1)
				l.Unlock()
				if rerr != nil {
					t.Error(rerr)
					return
				}
				i++
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("two holders at once %d times", n)
	}
}

// LockFile: shared holders coexist, an exclusive one waits for them, and a
// dropped lock file is not locked by a later holder.
func TestLockFileModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	ctx := t.Context()
	a, err := LockFile(ctx, path, Shared)
	if err != nil {
		t.Fatal(err)
	}
	b, err := TryLockFile(path, Shared)
	if err != nil {
		t.Fatalf("second shared holder: %v", err)
	}
	if _, err := TryLockFile(path, Exclusive); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive while shared: %v, want ErrLocked", err)
	}
	a.Unlock()
	a.Unlock() // twice is fine
	got := make(chan error, 1)
	go func() {
		l, err := LockFile(ctx, path, Exclusive)
		if err == nil {
			defer l.Unlock()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("exclusive lock taken while shared held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.Drop()
	if err := <-got; err != nil {
		t.Fatalf("exclusive after the shared ones: %v", err)
	}
	if _, err := TryLockFile(filepath.Join(t.TempDir(), "no", "dir"), Exclusive); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock in a missing directory: %v, want ErrNotExist", err)
	}
}
