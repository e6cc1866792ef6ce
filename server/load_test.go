package server_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// envLoad sets how long TestLoad runs, in seconds; unset skips it.
const envLoad = "KINDLING_LOAD_SECONDS"

// 50 sandboxes and 1,000 requests a second (list, inspect) through the
// native API: no error, and the server's heap bounded. Opt-in (it keeps a
// machine's cores busy): KINDLING_LOAD_SECONDS=30.
func TestLoad(t *testing.T) {
	secs, err := strconv.Atoi(os.Getenv(envLoad))
	if err != nil || secs <= 0 {
		t.Skipf("skipping: set %s to the seconds to run (the issue's figure is 30)", envLoad)
	}
	r := newRig(t, server.Config{})
	ctx := context.Background()
	const n = 50
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		ids[i] = fmt.Sprintf("load%02d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.client.Create(ctx, r.idleSpec(ids[i]), sandbox.CreateOptions{}); err != nil {
				errs <- err
				return
			}
			if _, err := r.client.Start(ctx, ids[i]); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_ = r.rt.Remove(context.Background(), id, true)
		}
	})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	const rate, workers = 1000, 16
	tick := time.Second / (rate / workers)
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	var mu sync.Mutex
	var lat []time.Duration
	var failures []error
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for i := 0; time.Now().Before(deadline); i++ {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				next = next.Add(tick)
				start := time.Now()
				var err error
				if i%2 == 0 {
					_, err = r.client.List(ctx, sandbox.ListOptions{})
				} else {
					_, err = r.client.Inspect(ctx, ids[(w+i)%n])
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				if err != nil {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed, first: %v", len(failures), len(lat), failures[0])
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("%d requests in %ds (%.0f/s) over 50 sandboxes: p50 %v, p99 %v, max %v; heap %d KiB before, %d KiB after",
		len(lat), secs, float64(len(lat))/float64(secs), p(0.5), p(0.99), lat[len(lat)-1], before.HeapAlloc>>10, after.HeapAlloc>>10)
	if after.HeapAlloc > before.HeapAlloc+64<<20 {
		t.Errorf("heap grew from %d to %d KiB", before.HeapAlloc>>10, after.HeapAlloc>>10)
	}
}
