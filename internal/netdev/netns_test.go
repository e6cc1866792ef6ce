package netdev

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResolveNetNSPaths covers paths that need no privilege.
func TestResolveNetNSPaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	self := "/proc/self/ns/net"
	abs, err := filepath.Abs(self)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{"own netns", self, abs, nil},
		{"own netns unclean", "/proc/self/ns/../ns/net", abs, nil},
		{"mount namespace", "/proc/self/ns/mnt", "", ErrNotNetNS},
		{"regular file", file, "", ErrNotNetNS},
		{"directory", dir, "", ErrNotNetNS},
		{"missing path", filepath.Join(dir, "missing"), "", ErrNotFound},
		{"missing name", "kdtest-does-not-exist", "", ErrNotFound},
		{"empty", "", "", ErrInvalid},
		{"dot", ".", "", ErrInvalid},
		{"dotdot", "..", "", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveNetNS(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ResolveNetNS(%q) = %q, %v; want error matching %v", tt.in, got, err, tt.wantErr)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveNetNS(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestResolveNetNSNamed(t *testing.T) {
	needRoot(t)
	name, path := newTestNetNS(t)
	rel, err := filepath.Rel(mustGetwd(t), path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
	}{
		{"by name", name},
		{"by path", path},
		{"by relative path", rel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveNetNS(tt.in)
			if err != nil || got != path {
				t.Fatalf("ResolveNetNS(%q) = %q, %v; want %q", tt.in, got, err, path)
			}
		})
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// TestDoReturnsHome checks that fn runs inside the namespace and that no
// thread is left in it afterwards: after many Do calls, goroutines locked
// to as many threads as the runtime has all see the host namespace.
func TestDoReturnsHome(t *testing.T) {
	needRoot(t)
	_, path := newTestNetNS(t)
	runtime.LockOSThread()
	host := nsInode(t)
	runtime.UnlockOSThread()
	target := fileInode(t, path)
	if target == host {
		t.Fatalf("new namespace has the host's inode %d", host)
	}

	for i := range 50 {
		var inside uint64
		if err := Do(path, func() error {
			inside = nsInode(t)
			return nil
		}); err != nil {
			t.Fatalf("Do #%d: %v", i, err)
		}
		if inside != target {
			t.Fatalf("Do #%d ran fn in netns inode %d, want %d", i, inside, target)
		}
		if got := nsInode(t); got != host {
			t.Fatalf("after Do #%d the caller's thread is in netns inode %d, want %d", i, got, host)
		}
	}

	// Lock many goroutines at once, so they are spread over every thread
	// the runtime has, including those Do used.
	const n = 64
	var wg sync.WaitGroup
	var ready, release sync.WaitGroup
	ready.Add(n)
	release.Add(1)
	inodes := make([]uint64, n)
	for i := range n {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err == nil {
				inodes[i] = st.Ino
			}
			ready.Done()
			release.Wait()
		})
	}
	ready.Wait()
	release.Done()
	wg.Wait()
	for i, ino := range inodes {
		if ino != host {
			t.Errorf("goroutine %d saw netns inode %d, want the host's %d", i, ino, host)
		}
	}
}

func TestDoResults(t *testing.T) {
	needRoot(t)
	_, path := newTestNetNS(t)
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		fn        func() error
		wantErr   error
		wantPanic any
	}{
		{"nil", func() error { return nil }, nil, nil},
		{"error", func() error { return errBoom }, errBoom, nil},
		{"panic", func() error { panic("kaboom") }, nil, "kaboom"},
		{"goexit", func() error { runtime.Goexit(); return nil }, errGoexit, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			p := func() (p any) {
				defer func() { p = recover() }()
				err = Do(path, tt.fn)
				return nil
			}()
			if p != tt.wantPanic {
				t.Fatalf("Do panicked with %v, want %v", p, tt.wantPanic)
			}
			if tt.wantPanic == nil && !errors.Is(err, tt.wantErr) && err != tt.wantErr {
				t.Fatalf("Do = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestDoBadNamespace(t *testing.T) {
	called := false
	fn := func() error { called = true; return nil }
	tests := []struct {
		name    string
		ns      string
		wantErr error
	}{
		{"missing", "/run/netns/kdtest-does-not-exist", ErrNotFound},
		{"not a netns", "/proc/self/ns/mnt", ErrNotNetNS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Do(tt.ns, fn); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Do(%q) = %v, want %v", tt.ns, err, tt.wantErr)
			}
			if called {
				t.Fatal("fn was called")
			}
		})
	}
}

func TestDoCurrent(t *testing.T) {
	called := false
	if err := Do("", func() error { called = true; return nil }); err != nil || !called {
		t.Fatalf(`Do("") = %v, called %v; want nil, true`, err, called)
	}
}
