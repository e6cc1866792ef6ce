package template

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestProgress checks that Create and Verify report hashing progress that
// grows and ends at the total, and that the total is the size of the files
// the manifest lists.
func TestProgress(t *testing.T) {
	r, fc := newRuntime(t, false)
	t.Cleanup(func() { assertTemplatesEmpty(t, r) })
	var (
		mu    sync.Mutex // guards calls
		calls [][2]int64
	)
	s, err := Open(r.rt, WithProgress(func(done, total int64) {
		mu.Lock()
		calls = append(calls, [2]int64{done, total})
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	templateSource(t, r, fc, "src")
	t.Cleanup(func() { removeAll(t, r, "src") })
	tpl, err := s.Create(ctx, "tpl", "src", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Remove(context.Background(), "tpl", false); err != nil {
			t.Error(err)
		}
	})
	var want int64
	for _, f := range tpl.Files {
		fi, err := os.Stat(filepath.Join(tpl.Dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		want += fi.Size()
	}
	check := func(op string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(calls) == 0 {
			t.Fatalf("%s reported no progress", op)
		}
		var last int64
		for _, c := range calls {
			if c[0] < last || c[1] != want {
				t.Fatalf("%s reported %v: want growing done, total %d", op, calls, want)
			}
			last = c[0]
		}
		if last != want {
			t.Fatalf("%s ended at %d of %d", op, last, want)
		}
		calls = nil
	}
	check("Create")
	if err := s.Verify(ctx, "tpl"); err != nil {
		t.Fatal(err)
	}
	check("Verify")
}
