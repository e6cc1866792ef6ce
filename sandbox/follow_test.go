package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFollowLog follows a log across rotations (the bounded console log
// moves console.log to console.log.1 and starts a new file) and checks
// that every byte arrives once, in order.
func TestFollowLog(t *testing.T) {
	tests := []struct {
		name string
		// steps run one after the other while the log is followed.
		steps []func(t *testing.T, path string)
		want  string
	}{
		{
			name:  "appends",
			steps: []func(*testing.T, string){appendTo("one\n"), appendTo("two\n")},
			want:  "one\ntwo\n",
		},
		{
			name:  "rotation",
			steps: []func(*testing.T, string){appendTo("one\n"), rotate, appendTo("two\n"), rotate, appendTo("three\n")},
			want:  "one\ntwo\nthree\n",
		},
		{
			name:  "file created late",
			steps: []func(*testing.T, string){remove, appendTo("late\n")},
			want:  "late\n",
		},
		{
			name:  "file removed while followed",
			steps: []func(*testing.T, string){appendTo("kept\n"), remove},
			want:  "kept\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.log")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			var out syncBuffer
			done := make(chan struct{})
			errc := make(chan error, 1)
			go func() { errc <- followLog(context.Background(), path, &out, done) }()
			for _, step := range tt.steps {
				step(t, path)
				time.Sleep(20 * time.Millisecond) // let the follower see each step
			}
			close(done)
			if err := <-errc; err != nil {
				t.Fatalf("followLog: %v", err)
			}
			if out.String() != tt.want {
				t.Errorf("followed %q, want %q", out.String(), tt.want)
			}
		})
	}
}

// TestFollowLogRotatedFirst checks that a follow starting after a rotation
// prints console.log.1 before console.log, and that the plain copy does the
// same.
func TestFollowLogRotatedFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(path+".1", []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := copyLog(path, &b); err != nil || b.String() != "old\nnew\n" {
		t.Errorf("copyLog = %q, %v; want %q", b.String(), err, "old\nnew\n")
	}
	var out syncBuffer
	done := make(chan struct{})
	close(done)
	if err := followLog(context.Background(), path, &out, done); err != nil || out.String() != "old\nnew\n" {
		t.Errorf("followLog = %q, %v; want %q", out.String(), err, "old\nnew\n")
	}
}

// TestFollowLogWakes checks that a follower sees an append while the log
// is still open (done not closed): it is woken by the change, not by the
// end of the sandbox.
func TestFollowLogWakes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	var out syncBuffer
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- followLog(context.Background(), path, &out, done) }()
	deadline := time.Now().Add(10 * time.Second)
	for i, s := range []string{"one\n", "two\n"} {
		time.Sleep(10 * time.Millisecond) // let the follower reach its wait
		appendTo(s)(t, path)
		want := []string{"one\n", "one\ntwo\n"}[i]
		for out.String() != want {
			if time.Now().After(deadline) {
				t.Fatalf("followed %q, want %q before the log ends", out.String(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if i == 0 {
			rotate(t, path)
		}
	}
	close(done)
	if err := <-errc; err != nil {
		t.Fatalf("followLog: %v", err)
	}
}

func TestFollowLogCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := followLog(ctx, path, &syncBuffer{}, make(chan struct{})); err != context.Canceled {
		t.Errorf("followLog after cancel = %v, want context.Canceled", err)
	}
}

func appendTo(s string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
}

func rotate(t *testing.T, path string) {
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
