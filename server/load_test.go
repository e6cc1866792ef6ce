package server_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/server"
)

// The load test's knobs. Without envLoad it runs a short version (CI's):
// fewer sandboxes, a lower rate, a few seconds, the same assertions.
const (
	// envLoad asks for the full run: this many seconds (the issue's
	// figure is 30) over 50 sandboxes.
	envLoad = "KINDLING_LOAD_SECONDS"
	// envLoadRate is the requests a second aimed at (default 1000 in the
	// full run).
	envLoadRate = "KINDLING_LOAD_RATE"
	// envLoadAgents is how many of the sandboxes are simulated guests
	// with the real agent, which the exec requests go to (default 4 in
	// the full run, 1 in the short one; 0 for no exec).
	envLoadAgents = "KINDLING_LOAD_AGENTS"
	// envLoadProfile names a file to write a CPU profile of the measured
	// seconds to (server and client: this process), without the set-up
	// that -cpuprofile would also hold.
	envLoadProfile = "KINDLING_LOAD_CPUPROFILE"
)

// loadSettings reads the knobs.
func loadSettings(t *testing.T) (secs, sandboxes, rate, agents int) {
	secs, sandboxes, rate, agents = 3, 10, 200, 1
	if v := os.Getenv(envLoad); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: give the seconds to run", envLoad, v)
		}
		secs, sandboxes, rate, agents = n, 50, 1000, 4
	}
	for _, k := range []struct {
		env string
		p   *int
	}{{envLoadRate, &rate}, {envLoadAgents, &agents}} {
		if v := os.Getenv(k.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				t.Fatalf("%s=%q: give a number", k.env, v)
			}
			*k.p = n
		}
	}
	if rate == 0 {
		t.Fatalf("%s=0: give a rate", envLoadRate)
	}
	return secs, sandboxes, rate, min(agents, sandboxes)
}

// Sandboxes and a steady rate of list, get (inspect) and exec 'true'
// requests through the native API over its Unix socket: no error, and the
// heap bounded. The figures (p50, p99 per kind; the rate reached) are
// logged; they are the host side's and the agent's (simulated guests),
// not a guest kernel's.
func TestLoad(t *testing.T) {
	secs, nsb, rate, nagents := loadSettings(t)
	if nagents > 0 {
		if err := simGuestProblem(); err != nil {
			t.Logf("no exec requests: %v", err)
			nagents = 0
		}
	}
	r := newRig(t, server.Config{})
	ctx := context.Background()
	ids := make([]string, nsb)
	var agents []string
	for i := range nagents {
		ids[i] = fmt.Sprintf("load%02d", i)
		r.startAgentSandbox(t, ids[i])
		agents = append(agents, ids[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, nsb)
	for i := nagents; i < nsb; i++ {
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
	t.Cleanup(func() {
		for _, id := range ids[nagents:] {
			_ = r.rt.Remove(context.Background(), id, true)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// The load's own client, keeping an idle connection for each worker
	// (the default keeps 16): else the test measures reconnects.
	c, err := remote.New(remote.Config{Host: "unix://" + r.sock, MaxIdleConns: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kinds := []string{"list", "get"}
	if len(agents) > 0 {
		kinds = append(kinds, "exec")
	}
	do := func(kind string, i int) error {
		switch kind {
		case "list":
			infos, err := c.List(ctx, sandbox.ListOptions{})
			if err == nil && len(infos) != nsb {
				err = fmt.Errorf("list: %d sandboxes, want %d", len(infos), nsb)
			}
			return err
		case "get":
			_, err := c.Inspect(ctx, ids[i%nsb])
			return err
		}
		p, err := c.Exec(ctx, agents[i%len(agents)], sandbox.ExecRequest{Args: []string{"true"}, Stdout: io.Discard, Stderr: io.Discard})
		if err != nil {
			return err
		}
		defer p.Close()
		code, err := p.Wait(ctx)
		if err == nil && code != 0 {
			err = fmt.Errorf("exec true: exit code %d", code)
		}
		return err
	}
	// Warm up (connections, caches), then measure.
	for i := range 20 {
		if err := do(kinds[i%len(kinds)], i); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// An open loop: a ticker hands out requests at the rate, workers take
	// them; a request no worker is free for is counted as missed, so the
	// rate reached is what the server answered.
	type result struct {
		kind string
		d    time.Duration
		err  error
	}
	const workers = 128
	jobs := make(chan int, workers)
	results := make(chan result, 1024)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				kind := kinds[i%len(kinds)]
				start := time.Now()
				err := do(kind, i/len(kinds))
				results <- result{kind, time.Since(start), err}
			}
		}()
	}
	lat := map[string][]time.Duration{}
	var failures []error
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for res := range results {
			lat[res.kind] = append(lat[res.kind], res.d)
			if res.err != nil {
				failures = append(failures, res.err)
			}
		}
	}()
	if path := os.Getenv(envLoadProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile() // once more is harmless
	}
	missed := 0
	cpuBefore := cpuTime()
	start := time.Now()
	deadline := start.Add(time.Duration(secs) * time.Second)
	interval := time.Second / time.Duration(rate)
	for i, next := 0, start; next.Before(deadline); i, next = i+1, next.Add(interval) {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		select {
		case jobs <- i:
		default:
			missed++
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	pprof.StopCPUProfile()
	cpu := cpuTime() - cpuBefore
	close(results)
	<-collected
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)

	if len(failures) > 0 {
		t.Errorf("%d requests failed, first: %v", len(failures), failures[0])
	}
	var all []time.Duration
	for _, k := range kinds {
		all = append(all, lat[k]...)
	}
	if len(all) == 0 {
		t.Fatal("no request was answered")
	}
	pct := func(l []time.Duration, q float64) time.Duration {
		slices.Sort(l)
		return l[int(q*float64(len(l)-1))]
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("%d sandboxes (%d with an agent), aiming at %d requests/s for %ds: %d answered (%.0f/s), %d not sent (no worker free); load average %s",
		nsb, len(agents), rate, secs, len(all), float64(len(all))/elapsed.Seconds(), missed, string(load[:min(len(load), 14)]))
	t.Logf("all: p50 %v, p99 %v; CPU of this process (server and client) %v per request, %.2f cores", pct(all, 0.5), pct(all, 0.99),
		cpu/time.Duration(len(all)), cpu.Seconds()/elapsed.Seconds())
	for _, k := range kinds {
		if l := lat[k]; len(l) > 0 {
			t.Logf("%s: %d, p50 %v, p99 %v, max %v", k, len(l), pct(l, 0.5), pct(l, 0.99), l[len(l)-1])
		}
	}
	t.Logf("heap %d KiB before, %d KiB after (client and server in this process)", before.HeapAlloc>>10, after.HeapAlloc>>10)
	if after.HeapAlloc > before.HeapAlloc+64<<20 {
		t.Errorf("heap grew from %d to %d KiB", before.HeapAlloc>>10, after.HeapAlloc>>10)
	}
}

// cpuTime is the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// simGuestProblem says why a simulated guest cannot run here, or nil.
func simGuestProblem() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the simulated guest needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("the simulated guest needs loop devices: %w", err)
	}
	if _, err := exec.LookPath("busybox"); err != nil {
		return fmt.Errorf("the test guest needs a static busybox (install busybox-static): %w", err)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return fmt.Errorf("the test guest's image needs mkfs.ext4 (install e2fsprogs): %w", err)
	}
	if _, err := testutil.AgentBinaryPath(); err != nil {
		return err
	}
	return nil
}
