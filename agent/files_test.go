package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// prng is a fast deterministic byte source.
type prng struct{ r *rand.ChaCha8 }

func (p prng) Read(b []byte) (int, error) { return p.r.Read(b) }

func TestFileRoundTrip(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	size := int64(100 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dst := filepath.Join(t.TempDir(), "sub", "dir", "big.bin")
	up := sha256.New()
	src := io.TeeReader(io.LimitReader(prng{rand.NewChaCha8([32]byte{1})}, size), up)
	if err := c.PutFile(ctx, dst, src, agent.FileOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	r, err := c.GetFile(ctx, dst, agent.FileOptions{})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	down := sha256.New()
	n, err := io.Copy(down, r)
	_ = r.Close()
	if err != nil || n != size {
		t.Fatalf("get: %d bytes, %v; want %d", n, err, size)
	}
	if !bytes.Equal(up.Sum(nil), down.Sum(nil)) {
		t.Fatalf("sha256 up %x != down %x", up.Sum(nil), down.Sum(nil))
	}
	fi, err := c.Stat(ctx, dst, agent.FileOptions{})
	if err != nil || fi.Size != size || fi.Type != agent.TypeFile {
		t.Fatalf("stat = %+v, %v", fi, err)
	}
}

func TestFileErrors(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := c.GetFile(ctx, filepath.Join(dir, "missing"), agent.FileOptions{}); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("get missing: err = %v, want ErrNotFound", err)
	}
	if _, err := c.GetFile(ctx, dir, agent.FileOptions{}); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("get a directory: err = %v, want ErrInvalid", err)
	}
	if err := c.PutFile(ctx, dir, bytes.NewReader([]byte("x")), agent.FileOptions{}); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("put over a directory: err = %v, want ErrInvalid", err)
	}
	if err := c.PutFile(ctx, filepath.Join(dir, "f"), bytes.NewReader(nil), agent.FileOptions{User: "no-such-user-kindling"}); !errors.Is(err, agent.ErrAccessDenied) {
		t.Errorf("put as a missing user: err = %v, want ErrAccessDenied", err)
	}
	if _, err := c.Stat(ctx, filepath.Join(dir, "missing"), agent.FileOptions{}); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("stat missing: err = %v, want ErrNotFound", err)
	}
}

func TestFileSystem(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	o := agent.FileOptions{}
	if err := c.MakeDir(ctx, filepath.Join(dir, "a", "b"), o); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if err := c.MakeDir(ctx, filepath.Join(dir, "a", "b"), o); !errors.Is(err, agent.ErrExists) {
		t.Errorf("mkdir existing: err = %v, want ErrExists", err)
	}
	if err := c.PutFile(ctx, filepath.Join(dir, "a", "b", "f.txt"), bytes.NewReader([]byte("hello")), o); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b/f.txt", filepath.Join(dir, "a", "link")); err != nil {
		t.Fatal(err)
	}
	names := func(fis []agent.FileInfo) []string {
		var n []string
		for _, fi := range fis {
			rel, _ := filepath.Rel(dir, fi.Path)
			n = append(n, rel+":"+fi.Type.String())
		}
		slices.Sort(n)
		return n
	}
	for _, tc := range []struct {
		depth int
		want  []string
	}{
		{1, []string{"a:directory"}},
		{0, []string{"a:directory"}},
		{3, []string{"a/b/f.txt:file", "a/b:directory", "a/link:symlink", "a:directory"}},
	} {
		fis, err := c.List(ctx, dir, tc.depth, o)
		if err != nil {
			t.Fatalf("list depth %d: %v", tc.depth, err)
		}
		if got := names(fis); !slices.Equal(got, tc.want) {
			t.Errorf("list depth %d = %q, want %q", tc.depth, got, tc.want)
		}
	}
	fi, err := c.Stat(ctx, filepath.Join(dir, "a", "link"), o)
	if err != nil || fi.Type != agent.TypeSymlink || fi.Target != "b/f.txt" {
		t.Errorf("stat link = %+v, %v", fi, err)
	}
	moved, err := c.Move(ctx, filepath.Join(dir, "a", "b", "f.txt"), filepath.Join(dir, "c", "g.txt"), o)
	if err != nil || moved.Name != "g.txt" || moved.Size != 5 {
		t.Fatalf("move = %+v, %v", moved, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "c", "g.txt")); err != nil || string(b) != "hello" {
		t.Errorf("moved file: %q, %v", b, err)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "a"), o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after remove: %v", err)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "a"), o); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("remove missing: err = %v, want ErrNotFound", err)
	}
	if _, err := c.List(ctx, filepath.Join(dir, "c", "g.txt"), 1, o); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("list a file: err = %v, want ErrInvalid", err)
	}
}

// Files written as a user belong to it, parents it creates too.
func TestFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing files as another user needs root")
	}
	testutil.CheckLeaks(t)
	_, c := setup(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "new", "f")
	if err := c.PutFile(context.Background(), p, bytes.NewReader([]byte("x")), agent.FileOptions{User: "nobody"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{p, filepath.Dir(p)} {
		fi, err := c.Stat(context.Background(), q, agent.FileOptions{})
		if err != nil || fi.Owner != "nobody" {
			t.Errorf("owner of %s = %q, %v; want nobody", q, fi.Owner, err)
		}
	}
}

func TestWatch(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	w, err := c.Watch(ctx, dir, true, agent.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[agent.WatchEvent]bool{
		{Name: "sub", Type: agent.EventCreate}:       false,
		{Name: "sub/f.txt", Type: agent.EventCreate}: false,
		{Name: "sub/f.txt", Type: agent.EventWrite}:  false,
		{Name: "sub/f.txt", Type: agent.EventRemove}: false,
	}
	seen := func(ev agent.WatchEvent) {
		if _, ok := want[ev]; ok {
			want[ev] = true
		}
	}
	next := func(what string) {
		t.Helper()
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended waiting for %s: %v", what, w.Err())
			}
			seen(ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for %s after 10s", what)
		}
	}
	next("mkdir")
	// The new directory is watched once its create event is handled.
	time.Sleep(50 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "sub", "f.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "sub", "f.txt")); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		all := true
		for _, ok := range want {
			all = all && ok
		}
		if all {
			return
		}
		next("the file's events")
	}
	t.Errorf("events seen: %v", want)
}
