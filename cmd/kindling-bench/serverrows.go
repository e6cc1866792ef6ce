package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// The server scenarios: kindlingd (a child process, daemon.go) against the
// raw floor of the same run. Two more paths:
//   - api: the native API through its Go client (sandbox/remote), over
//     kindlingd's Unix socket;
//   - cli-api: the kindling executable with --host naming that socket.
const (
	pathAPI     = "api"
	pathCLIHost = "cli-api"
)

// poolSize is how many clones the bench's warm pool keeps ready.
const poolSize = 2

// Metric keys of the server scenarios.
const (
	srvStart      = "server_start"         // start → marker through kindlingd; raw start
	srvPool       = "server_pool"          // template create claimed from a warm pool; raw snapshot load
	srvNoPool     = "server_nopool"        // template create without a pool; raw snapshot load
	srvRSSIdle    = "server_rss_idle"      // kindlingd's VmRSS just after it is ready
	srvRSSServing = "server_rss_serving"   // kindlingd's VmRSS with k sandboxes it made running
	srvRSSPer     = "server_rss_per"       // kindlingd's VmRSS growth per sandbox
	srvMemFirst   = "server_mem_first"     // 1st sandbox alone: monitor VmRSS + files
	srvMemFirstP  = "server_mem_first_pss" // 1st sandbox alone: monitor Pss + files
	srvMemScen    = "server_memory"        // the scenario of the memory metrics
	srvCreateScen = "server_create"        // the scenario of srvPool and srvNoPool
)

func srvConcKey(k int) string   { return fmt.Sprintf("server_concurrent_%d", k) }
func srvClonesKey(k int) string { return fmt.Sprintf("server_clones_%d", k) }
func srvMemKth(k int) string    { return fmt.Sprintf("server_mem_%d", k) }
func srvMemKthP(k int) string   { return fmt.Sprintf("server_mem_%d_pss", k) }
func srvCPUKey(k int) string    { return fmt.Sprintf("server_cpu_%d", k) }
func srvFCCPUKey(k int) string  { return fmt.Sprintf("server_fccpu_%d", k) }
func srvMonCPUKey(k int) string { return fmt.Sprintf("server_moncpu_%d", k) }

// serverScenarioOf names the scenario that measures a server metric (for
// its errors); ok is false for other metrics.
func serverScenarioOf(metric string) (string, bool) {
	switch {
	case metric == srvPool || metric == srvNoPool:
		return srvCreateScen, true
	case strings.HasPrefix(metric, "server_rss_") || strings.HasPrefix(metric, "server_mem_"):
		return srvMemScen, true
	case strings.HasPrefix(metric, "server_clones_"):
		return "server_concurrent_" + strings.TrimPrefix(metric, "server_clones_"), true
	case strings.HasPrefix(metric, "server_cpu_"):
		return "server_concurrent_" + strings.TrimPrefix(metric, "server_cpu_"), true
	case strings.HasPrefix(metric, "server_fccpu_"):
		return "server_concurrent_" + strings.TrimPrefix(metric, "server_fccpu_"), true
	case strings.HasPrefix(metric, "server_moncpu_"):
		return "server_concurrent_" + strings.TrimPrefix(metric, "server_moncpu_"), true
	}
	return "", false
}

// serverMetricDefs are the server rows, in report order; k is the largest
// concurrency level (the memory scenario's sandbox count).
func serverMetricDefs(conc []int) []metricDef {
	rss := target{absAtMost, 40 << 20}
	mem := target{absAtMost, 4 << 20}
	defs := []metricDef{
		{key: srvStart, title: "start → guest marker through kindlingd (raw: start)", kind: kindTime,
			targets: map[string]target{pathCLIHost: {ratioAtMost, 1.25}}},
		{key: srvPool, title: "create from a template, warm pool (API; raw: snapshot load)", kind: kindTime,
			targets: map[string]target{pathAPI: {ratioAtMost, 1.0}}},
		{key: srvNoPool, title: "create from a template, no pool (API; raw: snapshot load)", kind: kindTime,
			targets: map[string]target{pathAPI: {ratioAtMost, 1.25}}},
	}
	for _, k := range conc {
		defs = append(defs,
			metricDef{key: srvConcKey(k), title: fmt.Sprintf("%d creates at once through the API (raw: %d starts)", k, k), kind: kindConc, k: k,
				targets: map[string]target{pathAPI: {ratioAtLeast, 0.8}}},
			metricDef{key: srvClonesKey(k), title: fmt.Sprintf("%d template clones at once through the API (raw: %d snapshot loads)", k, k), kind: kindConc, k: k},
			metricDef{key: srvCPUKey(k), title: fmt.Sprintf("CPU per create, %d at once: kindlingd's share", k), kind: kindTime},
			metricDef{key: srvMonCPUKey(k), title: fmt.Sprintf("CPU per create, %d at once: the sandbox's monitor", k), kind: kindTime},
			metricDef{key: srvFCCPUKey(k), title: fmt.Sprintf("CPU per create, %d at once: Firecracker's own (for scale)", k), kind: kindTime})
	}
	k := memCount(conc)
	defs = append(defs,
		metricDef{key: srvRSSIdle, title: "kindlingd RSS, idle after start", kind: kindBytes,
			targets: map[string]target{pathAPI: rss}},
		metricDef{key: srvRSSServing, title: fmt.Sprintf("kindlingd RSS, idle with %d sandboxes it made", k), kind: kindBytes,
			targets: map[string]target{pathAPI: rss}},
		metricDef{key: srvRSSPer, title: "kindlingd RSS growth per sandbox", kind: kindBytes},
		metricDef{key: srvMemFirst, title: "memory beyond Firecracker, 1st kindlingd sandbox (monitor VmRSS + files)", kind: kindBytes,
			targets: map[string]target{pathAPI: mem}},
		metricDef{key: srvMemFirstP, title: "memory beyond Firecracker, 1st kindlingd sandbox (monitor Pss + files)", kind: kindBytes},
		metricDef{key: srvMemKth(k), title: fmt.Sprintf("memory beyond Firecracker, kindlingd sandbox %d of %d (monitor VmRSS + files)", k, k), kind: kindBytes},
		metricDef{key: srvMemKthP(k), title: fmt.Sprintf("memory beyond Firecracker, kindlingd sandbox %d of %d (monitor Pss + files)", k, k), kind: kindBytes},
	)
	return defs
}

// memCount is how many sandboxes the memory scenario makes: the largest
// concurrency level.
func memCount(conc []int) int {
	if len(conc) == 0 {
		return 1
	}
	return slices.Max(conc)
}

// serverScenarios are the server scenarios.
func serverScenarios(conc []int) []scenario {
	list := []scenario{
		{key: srvStart, paths: map[string]setupFunc{
			pathRaw: each(func(ctx context.Context, e *env) (sample, error) {
				t0 := time.Now()
				vm, err := rawStart(ctx, e, e.halt)
				if err != nil {
					return nil, err
				}
				d := time.Since(t0)
				e.rawDone(vm)
				return sample{srvStart: seconds(d)}, nil
			}),
			pathAPI: withDaemon(daemonOptions{}, func(ctx context.Context, e *env, d *daemon) (sample, error) {
				t0 := time.Now()
				id, err := apiStart(ctx, e, d)
				dur := time.Since(t0)
				return sample{srvStart: seconds(dur)}, errors.Join(err, apiDone(d, id))
			}),
			pathCLIHost: withDaemon(daemonOptions{}, func(ctx context.Context, e *env, d *daemon) (sample, error) {
				id := e.newID("h")
				t0 := time.Now()
				err := hostCLI(ctx, e, d, "run", "--detach", "--name", id, "--kernel", e.halt,
					"--firecracker", e.fc, "--wait-console", e.marker)
				dur := time.Since(t0)
				return sample{srvStart: seconds(dur)}, errors.Join(err, apiDone(d, id))
			}),
		}},
		{key: srvCreateScen, paths: map[string]setupFunc{
			pathRaw: rawLoads(func(ctx context.Context, e *env, load func(context.Context) (*rawVM, error)) (sample, error) {
				s := sample{}
				for _, key := range []string{srvPool, srvNoPool} {
					t0 := time.Now()
					vm, err := load(ctx)
					if err != nil {
						return nil, err
					}
					s[key] = seconds(time.Since(t0))
					e.rawDone(vm)
				}
				return s, nil
			}),
			pathAPI: withDaemon(daemonOptions{templates: []string{"pooled", "plain"}, pools: map[string]int{"pooled": poolSize}},
				func(ctx context.Context, e *env, d *daemon) (sample, error) {
					t0 := time.Now()
					in, err := d.client.RunTemplate(ctx, "pooled", template.CloneOptions{})
					pool := time.Since(t0)
					if err == nil && in.Spec.Labels[server.PoolLabel] != "pooled" {
						err = fmt.Errorf("create from template pooled: sandbox %s is not from the warm pool (a miss)", in.ID)
					}
					if err == nil && in.Status != sandbox.Running {
						err = fmt.Errorf("create from template pooled: sandbox %s is %s, want running", in.ID, in.Status)
					}
					if err = errors.Join(err, apiDone(d, in.ID)); err != nil {
						return nil, err
					}
					// Untimed: let the pool refill before anything else is
					// measured.
					if err := d.waitPool(ctx, "pooled", poolSize); err != nil {
						return nil, err
					}
					t0 = time.Now()
					in, err = d.client.RunTemplate(ctx, "plain", template.CloneOptions{})
					plain := time.Since(t0)
					if err == nil && in.Status != sandbox.Running {
						err = fmt.Errorf("create from template plain: sandbox %s is %s, want running", in.ID, in.Status)
					}
					if err = errors.Join(err, apiDone(d, in.ID)); err != nil {
						return nil, err
					}
					return sample{srvPool: seconds(pool), srvNoPool: seconds(plain)}, nil
				}),
		}},
	}
	for _, k := range conc {
		list = append(list, serverConcurrent(k))
	}
	list = append(list, serverMemory(memCount(conc)))
	return list
}

// withDaemon starts a kindlingd for a path (untimed) and runs fn at every
// iteration; the teardown stops it and removes what it made.
func withDaemon(o daemonOptions, fn func(ctx context.Context, e *env, d *daemon) (sample, error)) setupFunc {
	return func(ctx context.Context, e *env) (iterFunc, func(), error) {
		d, err := startDaemon(ctx, e, o)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) (sample, error) { return fn(ctx, e, d) }, func() { _ = d.close() }, nil
	}
}

// apiStart creates and starts a test-guest sandbox through the API,
// returning once its marker is on the console.
func apiStart(ctx context.Context, e *env, d *daemon) (string, error) {
	id := e.newID("a")
	spec := sandbox.Spec{ID: id, Kernel: e.halt, Firecracker: e.fc, WaitConsole: e.marker}
	if _, err := d.client.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		return "", err
	}
	if _, err := d.client.Start(ctx, id); err != nil {
		return id, err
	}
	return id, nil
}

// apiDone removes a sandbox through the API (killing it); an empty id is
// nothing to remove. Left-overs are removed when the daemon closes.
func apiDone(d *daemon, id string) error {
	if id == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := d.client.Remove(ctx, id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return fmt.Errorf("remove %s through the API: %w", id, err)
	}
	return nil
}

// hostCLI runs the kindling executable with --host naming the daemon.
func hostCLI(ctx context.Context, e *env, d *daemon, args ...string) error {
	cmd := exec.CommandContext(ctx, e.kindling, append([]string{"--host", "unix://" + d.sock}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kindling --host %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// rawLoads snapshots a raw VM once (setup) and gives fn a func that runs a
// raw snapshot load of it (spawn, load with resume).
func rawLoads(fn func(ctx context.Context, e *env, load func(context.Context) (*rawVM, error)) (sample, error)) setupFunc {
	return func(ctx context.Context, e *env) (iterFunc, func(), error) {
		vm, err := rawStart(ctx, e, e.halt)
		if err != nil {
			return nil, nil, err
		}
		src, err := e.newDir("src")
		if err != nil {
			e.rawDone(vm)
			return nil, nil, err
		}
		state, mem := filepath.Join(src, "snapshot.state"), filepath.Join(src, "snapshot.mem")
		err = vm.client.do(ctx, http.MethodPatch, "/vm", `{"state":"Paused"}`)
		if err == nil {
			err = vm.client.do(ctx, http.MethodPut, "/snapshot/create",
				fmt.Sprintf(`{"snapshot_type":"Full","snapshot_path":%q,"mem_file_path":%q}`, state, mem))
		}
		e.rawDone(vm)
		if err != nil {
			os.RemoveAll(src)
			return nil, nil, err
		}
		load := func(ctx context.Context) (*rawVM, error) { return rawRestore(ctx, e, state, mem) }
		return func(ctx context.Context) (sample, error) { return fn(ctx, e, load) }, func() { os.RemoveAll(src) }, nil
	}
}

// atOnce runs start(i) for i in [0, k) at once and returns the wall time
// until the last one returned. Then, when all succeeded, it runs mid (not
// timed) while everything started still runs; every sandbox or VM started
// is ended afterwards (not timed), also when some failed.
func atOnce(k int, start func(i int) (done func() error, err error), mid func() error) (time.Duration, error) {
	var wg sync.WaitGroup
	dones := make([]func() error, k)
	errs := make([]error, 2*k+1)
	t0 := time.Now()
	for i := range k {
		wg.Go(func() { dones[i], errs[i] = start(i) })
	}
	wg.Wait()
	d := time.Since(t0)
	if mid != nil && errors.Join(errs...) == nil {
		errs[2*k] = mid()
	}
	for i, done := range dones {
		if done != nil {
			wg.Go(func() { errs[k+i] = done() })
		}
	}
	wg.Wait()
	return d, errors.Join(errs...)
}

// serverConcurrent starts k sandboxes at once through the API (boots, to
// the console marker) against k raw starts, and k clones of a template at
// once (no pool) against k raw snapshot loads. While the k booted ones
// run it also reads what CPU time each start cost the host: kindlingd's
// (its growth over the batch, shared out) and the sandbox's monitor's,
// and, for scale, each Firecracker's own.
func serverConcurrent(k int) scenario {
	return scenario{key: srvConcKey(k), paths: map[string]setupFunc{
		pathRaw: rawLoads(func(ctx context.Context, e *env, load func(context.Context) (*rawVM, error)) (sample, error) {
			vms := make([]*rawVM, k)
			var fcCPU float64
			starts, err := atOnce(k, func(i int) (func() error, error) {
				vm, err := rawStart(ctx, e, e.halt)
				if err != nil {
					return nil, err
				}
				vms[i] = vm
				return func() error { e.rawDone(vm); return nil }, nil
			}, func() error {
				for _, vm := range vms {
					c, err := cpuTime(vm.cmd.Process.Pid)
					if err != nil {
						return fmt.Errorf("firecracker: %w", err)
					}
					fcCPU += c
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			loads, err := atOnce(k, func(int) (func() error, error) {
				vm, err := load(ctx)
				if err != nil {
					return nil, err
				}
				return func() error { e.rawDone(vm); return nil }, nil
			}, nil)
			if err != nil {
				return nil, err
			}
			return sample{srvConcKey(k): seconds(starts), srvClonesKey(k): seconds(loads), srvFCCPUKey(k): fcCPU / float64(k)}, nil
		}),
		pathAPI: withDaemon(daemonOptions{templates: []string{"plain"}}, func(ctx context.Context, e *env, d *daemon) (sample, error) {
			ids := make([]string, k)
			before, err := cpuTime(d.pid())
			if err != nil {
				return nil, fmt.Errorf("kindlingd: %w", err)
			}
			var cpu, monCPU, fcCPU float64
			starts, err := atOnce(k, func(i int) (func() error, error) {
				id, err := apiStart(ctx, e, d)
				ids[i] = id
				return func() error { return apiDone(d, id) }, err
			}, func() error {
				after, err := cpuTime(d.pid())
				if err != nil {
					return fmt.Errorf("kindlingd: %w", err)
				}
				cpu = after - before
				for _, id := range ids {
					in, err := d.client.Inspect(ctx, id)
					if err != nil {
						return err
					}
					mon, err := cpuTime(in.MonitorPID)
					if err != nil {
						return fmt.Errorf("monitor of %s: %w", id, err)
					}
					fc, err := cpuTime(in.PID)
					if err != nil {
						return fmt.Errorf("firecracker of %s: %w", id, err)
					}
					monCPU += mon
					fcCPU += fc
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			clones, err := atOnce(k, func(int) (func() error, error) {
				in, err := d.client.RunTemplate(ctx, "plain", template.CloneOptions{})
				return func() error { return apiDone(d, in.ID) }, err
			}, nil)
			if err != nil {
				return nil, err
			}
			return sample{srvConcKey(k): seconds(starts), srvClonesKey(k): seconds(clones),
				srvCPUKey(k): cpu / float64(k), srvMonCPUKey(k): monCPU / float64(k), srvFCCPUKey(k): fcCPU / float64(k)}, nil
		}),
	}}
}

// cpuTime is the CPU time (seconds) the live threads of process pid have
// run, from /proc/PID/task/*/schedstat (nanoseconds there; a Go process
// keeps its threads, so none of its time is lost with an exited one).
func cpuTime(pid int) (float64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no process to measure (pid %d)", pid)
	}
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var ns float64
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the thread ended meanwhile
			}
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("%s/%s/schedstat: empty", dir, t.Name())
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
		}
		ns += v
	}
	return ns / 1e9, nil
}

// serverMemory starts a fresh kindlingd at every iteration and measures
// its own memory when idle, then makes k sandboxes one after the other
// through the API and measures what the first costs beyond its
// Firecracker while alone and what the k-th costs with all k running: the
// monitor process the runtime spawned (found by the PID the server
// reports, whatever executable it runs), by VmRSS and by Pss, plus the
// files in the sandbox's directory; and kindlingd's memory again.
func serverMemory(k int) scenario {
	return scenario{key: srvMemScen, paths: map[string]setupFunc{
		pathAPI: each(func(ctx context.Context, e *env) (_ sample, err error) {
			d, err := startDaemon(ctx, e, daemonOptions{})
			if err != nil {
				return nil, err
			}
			defer func() { err = errors.Join(err, d.close()) }()
			// Let the start-up settle (goroutines parked, first GC).
			time.Sleep(100 * time.Millisecond)
			idle, err := vmRSS(d.pid())
			if err != nil {
				return nil, fmt.Errorf("kindlingd: %w", err)
			}
			s := sample{srvRSSIdle: idle}
			var ids []string
			for i := range k {
				id, err := apiStart(ctx, e, d)
				if id != "" {
					ids = append(ids, id)
				}
				if err != nil {
					return nil, err
				}
				if i == 0 {
					if s[srvMemFirst], s[srvMemFirstP], err = monitorMemory(ctx, d, id); err != nil {
						return nil, err
					}
				}
			}
			if s[srvMemKth(k)], s[srvMemKthP(k)], err = monitorMemory(ctx, d, ids[len(ids)-1]); err != nil {
				return nil, err
			}
			serving, err := vmRSS(d.pid())
			if err != nil {
				return nil, fmt.Errorf("kindlingd: %w", err)
			}
			s[srvRSSServing] = serving
			s[srvRSSPer] = max(serving-idle, 0) / float64(k)
			return s, nil
		}),
	}}
}

// monitorMemory is what sandbox id of the daemon costs beyond its
// Firecracker: its monitor's VmRSS and Pss, each plus the allocated size
// of the files in the sandbox's directory.
func monitorMemory(ctx context.Context, d *daemon, id string) (rss, pss float64, err error) {
	in, err := d.client.Inspect(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	if in.MonitorPID <= 0 || in.MonitorPID == in.PID {
		return 0, 0, fmt.Errorf("sandbox %s: the server reports no monitor process (pid %d)", id, in.MonitorPID)
	}
	if rss, err = vmRSS(in.MonitorPID); err != nil {
		return 0, 0, fmt.Errorf("monitor of %s: %w", id, err)
	}
	if pss, err = smapsRollup(in.MonitorPID, "Pss"); err != nil {
		return 0, 0, fmt.Errorf("monitor of %s: %w", id, err)
	}
	files, err := dirBytes(in.Dir)
	if err != nil {
		return 0, 0, err
	}
	return rss + files, pss + files, nil
}
