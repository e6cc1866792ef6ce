package sandbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// loadSandboxes is how many sandboxes TestLoad50Sandboxes runs at once.
const loadSandboxes = 50

// loadWorkers bounds how many operations TestLoad50Sandboxes runs concurrently.
const loadWorkers = 8

// TestLoad50Sandboxes runs 50 sandboxes at once: all are listed, paused, resumed,
// stopped and removed correctly, and nothing is left.
func TestLoad50Sandboxes(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the 50-sandbox load test in -short mode")
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) { testLoad(t, mode.real) })
	}
}

func testLoad(t *testing.T, real bool) {
	r, fc := newFaultRuntime(t, real)
	ctx := context.Background()
	kernel := haltGuest(t, "load guest up")
	memory := 16 // the fake allocates nothing; keep the records honest anyway
	if real {
		memory = 128
	}
	ids := make([]string, loadSandboxes)
	for i := range ids {
		ids[i] = fmt.Sprintf("load%02d", i)
	}
	// Stop and remove whatever is left if the test fails half-way.
	t.Cleanup(func() {
		for _, id := range ids {
			r.Remove(ctx, id, true)
		}
	})

	phase := func(name string, op func(ctx context.Context, id string) error) {
		t.Helper()
		began := time.Now()
		errs := forEach(ids, func(id string) error {
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return op(octx, id)
		})
		t.Logf("%s %d sandboxes (%d at a time): %v", name, len(ids), loadWorkers, time.Since(began).Round(time.Millisecond))
		for _, err := range errs {
			t.Errorf("%s: %v", name, err)
		}
		if len(errs) > 0 {
			t.FailNow()
		}
	}
	expect := func(want Status) {
		t.Helper()
		infos, err := r.List(ctx, ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) != len(ids) {
			t.Fatalf("list shows %d sandboxes, want %d", len(infos), len(ids))
		}
		pids := map[int]string{}
		for i, in := range infos {
			if in.ID != ids[i] || in.Status != want {
				t.Errorf("list[%d] = %s %s, want %s %s", i, in.ID, in.Status, ids[i], want)
			}
			if want == Running || want == Paused {
				if in.PID == 0 || in.MonitorPID == 0 {
					t.Errorf("%s is %s without a VMM or monitor pid: %+v", in.ID, in.Status, in)
				}
				if other, dup := pids[in.PID]; dup {
					t.Errorf("%s and %s share VMM pid %d", in.ID, other, in.PID)
				}
				pids[in.PID] = in.ID
			}
		}
	}

	phase("create", func(ctx context.Context, id string) error {
		_, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc, VCPUs: 1, MemoryMiB: memory}, CreateOptions{})
		return err
	})
	expect(Created)
	phase("start", func(ctx context.Context, id string) error {
		in, err := r.Start(ctx, id)
		if err == nil && in.Status != Running {
			err = fmt.Errorf("started %s is %s", id, in.Status)
		}
		return err
	})
	expect(Running)
	for _, id := range ids {
		in, err := r.Inspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		waitConsole(t, in, "load guest up")
	}
	phase("pause", r.Pause)
	expect(Paused)
	phase("resume", r.Resume)
	expect(Running)
	phase("stop", func(ctx context.Context, id string) error { return r.Stop(ctx, id) })
	expect(Exited)
	phase("remove", func(ctx context.Context, id string) error { return r.Remove(ctx, id, false) })
	if infos, err := r.List(ctx, ListOptions{}); err != nil || len(infos) != 0 {
		t.Fatalf("after removing all: %d sandboxes listed, %v", len(infos), err)
	}
	gcLeavesNothing(t, r)
}

// forEach calls fn for each ID, loadWorkers at a time, and returns the
// errors, each naming its ID.
func forEach(ids []string, fn func(id string) error) []error {
	var (
		mu   sync.Mutex // guards errs
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, loadWorkers)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(id); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}
