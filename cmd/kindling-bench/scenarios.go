package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
	"github.com/kindling-vm/kindling/vmm"
)

// The paths every operation is measured on, in the order they interleave.
const (
	pathRaw     = "raw"
	pathLib     = "lib"
	pathRuntime = "runtime"
	pathCLI     = "cli"
)

var pathOrder = []string{pathRaw, pathLib, pathRuntime, pathCLI, pathAPI, pathCLIHost}

// sample is what one iteration of one path measured: seconds for times,
// bytes for memory, keyed by metric.
type sample map[string]float64

// iterFunc runs one measured iteration.
type iterFunc func(ctx context.Context) (sample, error)

// setupFunc prepares a path of a scenario (untimed) and returns its
// iteration and its teardown.
type setupFunc func(ctx context.Context, e *env) (iterFunc, func(), error)

// scenario is a group of metrics measured together on several paths.
type scenario struct {
	key   string
	paths map[string]setupFunc
}

// each wraps an iteration that needs no setup.
func each(fn func(ctx context.Context, e *env) (sample, error)) setupFunc {
	return func(_ context.Context, e *env) (iterFunc, func(), error) {
		return func(ctx context.Context) (sample, error) { return fn(ctx, e) }, func() {}, nil
	}
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// scenarios returns every scenario; conc lists the concurrency levels.
func scenarios(conc []int) []scenario {
	list := []scenario{
		{key: "spawn", paths: map[string]setupFunc{
			pathRaw: each(func(ctx context.Context, e *env) (sample, error) {
				t0 := time.Now()
				vm, err := rawStart(ctx, e, "")
				if err != nil {
					return nil, err
				}
				d := time.Since(t0)
				e.rawDone(vm)
				return sample{"spawn": seconds(d)}, nil
			}),
			pathLib: each(func(ctx context.Context, e *env) (sample, error) {
				h := newLogClock()
				t0 := time.Now()
				m, err := libStart(ctx, e, e.halt, false, vmm.WithLogger(slog.New(h)))
				if err != nil {
					return nil, err
				}
				e.libDone(m)
				at := h.when(apiReadyMsg)
				if at.IsZero() {
					return nil, fmt.Errorf("the driver did not log %q at debug level: cannot tell when its API was ready", apiReadyMsg)
				}
				return sample{"spawn": seconds(at.Sub(t0))}, nil
			}),
		}},
		{key: "start", paths: map[string]setupFunc{
			pathRaw: each(func(ctx context.Context, e *env) (sample, error) {
				var ph rawPhases
				t0 := time.Now()
				vm, err := rawStartPhases(ctx, e, e.halt, &ph)
				if err != nil {
					return nil, err
				}
				t1 := time.Now()
				defer e.rawDone(vm)
				files, err := dirBytes(vm.dir)
				if err != nil {
					return nil, err
				}
				rss, err := vmRSS(vm.cmd.Process.Pid)
				if err != nil {
					return nil, err
				}
				s := sample{"start": seconds(t1.Sub(t0)), "memory": files, "memory_pss": files, "memory_private": files, "fc_rss": rss}
				if e.phases {
					addPhases(s, t0, ph.api, ph.config, ph.instance, t1)
				}
				return s, nil
			}),
			pathLib: each(func(ctx context.Context, e *env) (sample, error) {
				var opts []vmm.Option
				var clock *logClock
				if e.phases {
					clock = newLogClock()
					opts = append(opts, vmm.WithLogger(slog.New(clock)))
				}
				t0 := time.Now()
				m, err := libStart(ctx, e, e.halt, true, opts...)
				if err != nil {
					return nil, err
				}
				t1 := time.Now()
				defer e.libDone(m)
				files, err := dirBytes(m.Config().RunDir)
				if err != nil {
					return nil, err
				}
				pid, _ := m.PID()
				rss, err := vmRSS(pid)
				if err != nil {
					return nil, err
				}
				s := sample{"start": seconds(t1.Sub(t0)), "memory": files, "memory_pss": files, "memory_private": files, "fc_rss": rss}
				if clock != nil {
					addPhases(s, t0, clock.when(apiReadyMsg), clock.when(stepDoneMsg+" metrics"),
						clock.when(stepDoneMsg+" instance-start"), t1)
				}
				return s, nil
			}),
			pathRuntime: each(func(ctx context.Context, e *env) (sample, error) {
				return sandboxStart(ctx, e, rtStart)
			}),
			pathCLI: each(func(ctx context.Context, e *env) (sample, error) {
				return sandboxStart(ctx, e, cliStart)
			}),
		}},
		{key: "stop", paths: map[string]setupFunc{
			pathRaw: each(func(ctx context.Context, e *env) (sample, error) {
				vm, err := rawStart(ctx, e, e.halt)
				if err != nil {
					return nil, err
				}
				t0 := time.Now()
				vm.kill()
				d := time.Since(t0)
				e.rawDone(vm)
				return sample{"stop": seconds(d)}, nil
			}),
			pathLib: each(func(ctx context.Context, e *env) (sample, error) {
				// The test guest cannot react to Ctrl-Alt-Del: skip the grace.
				return libStop(ctx, e, "stop", e.halt, false, vmm.WithStopGrace(0))
			}),
			pathRuntime: each(func(ctx context.Context, e *env) (sample, error) {
				return sandboxStop(ctx, e, e.halt, false, func(ctx context.Context, id string) error { return e.rt.Stop(ctx, id) })
			}),
			pathCLI: each(func(ctx context.Context, e *env) (sample, error) {
				return sandboxStop(ctx, e, e.halt, false, cliStop(e))
			}),
		}},
		{key: "stop_exited", paths: map[string]setupFunc{
			pathRaw: each(func(ctx context.Context, e *env) (sample, error) {
				vm, err := rawStart(ctx, e, e.poweroff)
				if err != nil {
					return nil, err
				}
				defer e.rawDone(vm)
				select {
				case <-vm.eof: // the console closes when the process exits
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				t0 := time.Now()
				vm.kill()
				return sample{"stop_exited": seconds(time.Since(t0))}, nil
			}),
			pathLib: each(func(ctx context.Context, e *env) (sample, error) {
				return libStop(ctx, e, "stop_exited", e.poweroff, true)
			}),
			pathRuntime: each(func(ctx context.Context, e *env) (sample, error) {
				return sandboxStop(ctx, e, e.poweroff, true, func(ctx context.Context, id string) error { return e.rt.Stop(ctx, id) })
			}),
			pathCLI: each(func(ctx context.Context, e *env) (sample, error) {
				return sandboxStop(ctx, e, e.poweroff, true, cliStop(e))
			}),
		}},
		{key: "pause", paths: map[string]setupFunc{
			pathRaw: func(ctx context.Context, e *env) (iterFunc, func(), error) {
				vm, err := rawStart(ctx, e, e.halt)
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context) (sample, error) {
					return pauseResume(ctx,
						func(ctx context.Context) error {
							return vm.client.do(ctx, http.MethodPatch, "/vm", `{"state":"Paused"}`)
						},
						func(ctx context.Context) error {
							return vm.client.do(ctx, http.MethodPatch, "/vm", `{"state":"Resumed"}`)
						})
				}, func() { e.rawDone(vm) }, nil
			},
			pathLib: func(ctx context.Context, e *env) (iterFunc, func(), error) {
				m, err := libStart(ctx, e, e.halt, true)
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context) (sample, error) {
					return pauseResume(ctx, m.Pause, m.Resume)
				}, func() { e.libDone(m) }, nil
			},
			pathRuntime: sandboxPauseResume(func(e *env, op, id string) func(context.Context) error {
				if op == "pause" {
					return func(ctx context.Context) error { return e.rt.Pause(ctx, id) }
				}
				return func(ctx context.Context) error { return e.rt.Resume(ctx, id) }
			}),
			pathCLI: sandboxPauseResume(func(e *env, op, id string) func(context.Context) error {
				return func(ctx context.Context) error { _, err := cli(ctx, e, op, id); return err }
			}),
		}},
		{key: "snapshot", paths: map[string]setupFunc{
			pathRaw: func(ctx context.Context, e *env) (iterFunc, func(), error) {
				vm, err := rawStart(ctx, e, e.halt)
				if err != nil {
					return nil, nil, err
				}
				c := vm.client
				return func(ctx context.Context) (sample, error) {
					dir, err := e.newDir("p")
					if err != nil {
						return nil, err
					}
					defer os.RemoveAll(dir)
					body := fmt.Sprintf(`{"snapshot_type":"Full","snapshot_path":%q,"mem_file_path":%q}`,
						filepath.Join(dir, "snapshot.state"), filepath.Join(dir, "snapshot.mem"))
					t0 := time.Now()
					if err := c.do(ctx, http.MethodPatch, "/vm", `{"state":"Paused"}`); err != nil {
						return nil, err
					}
					t1 := time.Now()
					if err := c.do(ctx, http.MethodPut, "/snapshot/create", body); err != nil {
						return nil, err
					}
					t2 := time.Now()
					if err := c.do(ctx, http.MethodPatch, "/vm", `{"state":"Resumed"}`); err != nil {
						return nil, err
					}
					t3 := time.Now()
					return sample{"snapshot": seconds(t2.Sub(t1)), "snapshot_running": seconds(t3.Sub(t0))}, nil
				}, func() { e.rawDone(vm) }, nil
			},
			pathLib: func(ctx context.Context, e *env) (iterFunc, func(), error) {
				m, err := libStart(ctx, e, e.halt, true)
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context) (sample, error) {
					dir, err := e.newDir("p")
					if err != nil {
						return nil, err
					}
					defer os.RemoveAll(dir)
					o := vmm.SnapshotOptions{SnapshotPath: filepath.Join(dir, "snapshot.state"), MemPath: filepath.Join(dir, "snapshot.mem")}
					t0 := time.Now()
					if err := m.Pause(ctx); err != nil {
						return nil, err
					}
					t1 := time.Now()
					if _, err := m.CreateSnapshot(ctx, o); err != nil {
						return nil, err
					}
					t2 := time.Now()
					if err := m.Resume(ctx); err != nil {
						return nil, err
					}
					t3 := time.Now()
					return sample{"snapshot": seconds(t2.Sub(t1)), "snapshot_running": seconds(t3.Sub(t0))}, nil
				}, func() { e.libDone(m) }, nil
			},
			pathRuntime: sandboxSnapshot(func(ctx context.Context, e *env, id, dir string) error {
				_, err := e.rt.Snapshot(ctx, id, dir, sandbox.SnapshotOptions{})
				return err
			}),
			pathCLI: sandboxSnapshot(func(ctx context.Context, e *env, id, dir string) error {
				_, err := cli(ctx, e, "snapshot", id, dir)
				return err
			}),
		}},
		{key: "restore", paths: map[string]setupFunc{
			pathRaw: rawRestoreSetup("restore"),
			pathLib: func(ctx context.Context, e *env) (iterFunc, func(), error) {
				m, err := libStart(ctx, e, e.halt, true)
				if err != nil {
					return nil, nil, err
				}
				src := filepath.Join(e.tmp, e.newID("src"))
				snap, err := m.CreateSnapshot(ctx, vmm.SnapshotOptions{Dir: src, PauseAround: true})
				e.libDone(m)
				if err != nil {
					os.RemoveAll(src)
					return nil, nil, err
				}
				return func(ctx context.Context) (sample, error) {
					dir, err := e.newDir("l")
					if err != nil {
						return nil, err
					}
					t0 := time.Now()
					m, err := vmm.Restore(ctx, vmm.RestoreConfig{Snapshot: snap, Config: vmm.Config{Firecracker: e.fc, RunDir: dir}, Resume: true})
					if err != nil {
						os.RemoveAll(dir)
						return nil, err
					}
					d := time.Since(t0)
					e.track.addMachine(m)
					e.libDone(m)
					return sample{"restore": seconds(d)}, nil
				}, func() { os.RemoveAll(src) }, nil
			},
			pathRuntime: sandboxRestore(func(ctx context.Context, e *env, src, id string) error {
				_, err := e.rt.Restore(ctx, src, sandbox.RestoreOptions{ID: id, Firecracker: e.fc})
				return err
			}),
			pathCLI: sandboxRestore(func(ctx context.Context, e *env, src, id string) error {
				_, err := cli(ctx, e, "restore", "--detach", "--name", id, src)
				return err
			}),
		}},
	}
	list = append(list, cloneScenario())
	list = append(list, agentScenarios()...)
	list = append(list, netScenarios()...)
	list = append(list, imageScenarios()...)
	for _, k := range conc {
		list = append(list, concurrentScenario(k), clonesAtOnce(k))
	}
	list = append(list, serverScenarios(conc)...)
	return list
}

// rawRestoreSetup snapshots a raw VM once, then times raw snapshot loads
// (spawn, load with resume) as metric.
func rawRestoreSetup(metric string) setupFunc {
	return rawLoads(func(ctx context.Context, e *env, load func(context.Context) (*rawVM, error)) (sample, error) {
		t0 := time.Now()
		vm, err := load(ctx)
		if err != nil {
			return nil, err
		}
		d := time.Since(t0)
		e.rawDone(vm)
		return sample{metric: seconds(d)}, nil
	})
}

// libStop starts a VM through the library and times its Stop as metric;
// with exited, only once the guest has powered off and Firecracker exited.
func libStop(ctx context.Context, e *env, metric, kernel string, exited bool, opts ...vmm.Option) (sample, error) {
	m, err := libStart(ctx, e, kernel, true, opts...)
	if err != nil {
		return nil, err
	}
	defer e.libDone(m)
	if exited {
		if _, err := m.Wait(ctx); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	if err := m.Stop(ctx); err != nil {
		return nil, err
	}
	return sample{metric: seconds(time.Since(t0))}, nil
}

// benchTemplate makes a template from a running test-guest sandbox (then
// removed) and returns its name and a func that removes it.
func benchTemplate(ctx context.Context, e *env) (string, func(), error) {
	id, err := rtStart(ctx, e, e.halt)
	if err != nil {
		return "", nil, err
	}
	tmpl := e.newID("t")
	_, err = e.tpl.Create(ctx, tmpl, id, template.Options{})
	if err = errors.Join(err, e.sandboxDone(id)); err != nil {
		return "", nil, err
	}
	return tmpl, func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		e.tpl.Remove(ctx, tmpl, true)
	}, nil
}

// cloneScenario times a clone from a template against the raw snapshot
// load of the same run; the template is made once from a running sandbox.
func cloneScenario() scenario {
	clone := func(run func(ctx context.Context, e *env, tmpl, id string) error) setupFunc {
		return func(ctx context.Context, e *env) (iterFunc, func(), error) {
			tmpl, drop, err := benchTemplate(ctx, e)
			if err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) {
				nid := e.newID("k")
				e.track.addSandbox(nid)
				t0 := time.Now()
				err := run(ctx, e, tmpl, nid)
				d := time.Since(t0)
				if err = errors.Join(err, e.sandboxDone(nid)); err != nil {
					return nil, err
				}
				return sample{"clone": seconds(d)}, nil
			}, drop, nil
		}
	}
	return scenario{key: "clone", paths: map[string]setupFunc{
		pathRaw: rawRestoreSetup("clone"),
		pathRuntime: clone(func(ctx context.Context, e *env, tmpl, id string) error {
			_, err := e.tpl.Run(ctx, tmpl, template.CloneOptions{ID: id})
			return err
		}),
		pathCLI: clone(func(ctx context.Context, e *env, tmpl, id string) error {
			_, err := cli(ctx, e, "run", "--detach", "--template", tmpl, "--name", id)
			return err
		}),
	}}
}

// sandboxStart measures a start of the runtime or CLI path and what the
// sandbox then costs in memory.
func sandboxStart(ctx context.Context, e *env, start func(context.Context, *env, string) (string, error)) (sample, error) {
	t0 := time.Now()
	id, err := start(ctx, e, e.halt)
	if err != nil {
		return nil, err
	}
	d := time.Since(t0)
	s, err := sandboxMemory(ctx, e, id)
	if err = errors.Join(err, e.sandboxDone(id)); err != nil {
		return nil, err
	}
	s["start"] = seconds(d)
	return s, nil
}

// sandboxStop starts a sandbox with the runtime (untimed), optionally waits
// for its guest to power off, and measures stop.
func sandboxStop(ctx context.Context, e *env, kernel string, exited bool, stop func(context.Context, string) error) (sample, error) {
	id, err := rtStart(ctx, e, kernel)
	if err != nil {
		return nil, err
	}
	if exited {
		if _, err := e.rt.Wait(ctx, id); err != nil {
			return nil, errors.Join(err, e.sandboxDone(id))
		}
	}
	t0 := time.Now()
	err = stop(ctx, id)
	d := time.Since(t0)
	if err = errors.Join(err, e.sandboxDone(id)); err != nil {
		return nil, err
	}
	key := "stop"
	if exited {
		key = "stop_exited"
	}
	return sample{key: seconds(d)}, nil
}

func cliStop(e *env) func(context.Context, string) error {
	return func(ctx context.Context, id string) error { _, err := cli(ctx, e, "stop", id); return err }
}

// pauseResume times a pause and then a resume.
func pauseResume(ctx context.Context, pause, resume func(context.Context) error) (sample, error) {
	t0 := time.Now()
	if err := pause(ctx); err != nil {
		return nil, err
	}
	t1 := time.Now()
	if err := resume(ctx); err != nil {
		return nil, err
	}
	return sample{"pause": seconds(t1.Sub(t0)), "resume": seconds(time.Since(t1))}, nil
}

// sandboxPauseResume pauses and resumes one long-lived sandbox.
func sandboxPauseResume(op func(e *env, op, id string) func(context.Context) error) setupFunc {
	return longLived(func(ctx context.Context, e *env, id string) (sample, error) {
		return pauseResume(ctx, op(e, "pause", id), op(e, "resume", id))
	})
}

// sandboxSnapshot snapshots one long-lived running sandbox again and again.
func sandboxSnapshot(snap func(ctx context.Context, e *env, id, dir string) error) setupFunc {
	return longLived(func(ctx context.Context, e *env, id string) (sample, error) {
		dir := filepath.Join(e.tmp, e.newID("p"))
		defer os.RemoveAll(dir)
		t0 := time.Now()
		if err := snap(ctx, e, id, dir); err != nil {
			return nil, err
		}
		return sample{"snapshot_running": seconds(time.Since(t0))}, nil
	})
}

// longLived starts a sandbox with the runtime (untimed) and runs fn on it
// at every iteration.
func longLived(fn func(ctx context.Context, e *env, id string) (sample, error)) setupFunc {
	return func(ctx context.Context, e *env) (iterFunc, func(), error) {
		id, err := rtStart(ctx, e, e.halt)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) (sample, error) { return fn(ctx, e, id) }, func() { e.sandboxDone(id) }, nil
	}
}

// sandboxRestore restores new sandboxes from one snapshot of a runtime
// sandbox.
func sandboxRestore(restore func(ctx context.Context, e *env, src, id string) error) setupFunc {
	return func(ctx context.Context, e *env) (iterFunc, func(), error) {
		id, err := rtStart(ctx, e, e.halt)
		if err != nil {
			return nil, nil, err
		}
		src := filepath.Join(e.tmp, e.newID("src"))
		_, err = e.rt.Snapshot(ctx, id, src, sandbox.SnapshotOptions{})
		if err = errors.Join(err, e.sandboxDone(id)); err != nil {
			os.RemoveAll(src)
			return nil, nil, err
		}
		return func(ctx context.Context) (sample, error) {
			nid := e.newID("s")
			e.track.addSandbox(nid)
			t0 := time.Now()
			err := restore(ctx, e, src, nid)
			d := time.Since(t0)
			if err = errors.Join(err, e.sandboxDone(nid)); err != nil {
				return nil, err
			}
			return sample{"restore": seconds(d)}, nil
		}, func() { os.RemoveAll(src) }, nil
	}
}

// concurrentScenario starts k VMs at once on each path and times until all
// of them show the marker.
func concurrentScenario(k int) scenario {
	key := concKey(k)
	// run starts k VMs with start; for sandboxes, start also names the
	// sandbox so that its memory can be measured while all k run.
	run := func(ctx context.Context, e *env, start func(ctx context.Context) (func(), string, error)) (sample, error) {
		var wg sync.WaitGroup
		dones := make([]func(), k)
		ids := make([]string, k)
		errs := make([]error, k)
		t0 := time.Now()
		for i := range k {
			wg.Go(func() { dones[i], ids[i], errs[i] = start(ctx) })
		}
		wg.Wait()
		d := time.Since(t0)
		smp := sample{key: seconds(d)}
		if err := errors.Join(errs...); err == nil && ids[0] != "" {
			mem, fleet, err := sharedMemory(ctx, e, ids)
			if err != nil {
				errs = append(errs, err)
			}
			smp[memKey(k)], smp[fleetKey("booted", k)] = mem, fleet
		}
		for _, done := range dones {
			if done != nil {
				wg.Go(done)
			}
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return smp, nil
	}
	return scenario{key: key, paths: map[string]setupFunc{
		pathRaw: each(func(ctx context.Context, e *env) (sample, error) {
			return run(ctx, e, func(ctx context.Context) (func(), string, error) {
				vm, err := rawStart(ctx, e, e.halt)
				if err != nil {
					return nil, "", err
				}
				return func() { e.rawDone(vm) }, "", nil
			})
		}),
		pathLib: each(func(ctx context.Context, e *env) (sample, error) {
			return run(ctx, e, func(ctx context.Context) (func(), string, error) {
				m, err := libStart(ctx, e, e.halt, true)
				if err != nil {
					return nil, "", err
				}
				return func() { e.libDone(m) }, "", nil
			})
		}),
		pathRuntime: each(func(ctx context.Context, e *env) (sample, error) {
			return run(ctx, e, func(ctx context.Context) (func(), string, error) {
				id, err := rtStart(ctx, e, e.halt)
				if err != nil {
					return nil, "", err
				}
				return func() { e.sandboxDone(id) }, id, nil
			})
		}),
		pathCLI: each(func(ctx context.Context, e *env) (sample, error) {
			return run(ctx, e, func(ctx context.Context) (func(), string, error) {
				id, err := cliStart(ctx, e, e.halt)
				if err != nil {
					return nil, "", err
				}
				return func() { e.sandboxDone(id) }, id, nil
			})
		}),
	}}
}

func concKey(k int) string { return fmt.Sprintf("concurrent_%d", k) }

// fleetKey names the whole host memory per sandbox (Firecracker included)
// with k sandboxes of a kind ("booted", "clones") running.
func fleetKey(kind string, k int) string { return fmt.Sprintf("fleet_%s_%d", kind, k) }

// clonesAtOnce starts k clones of one template at once through the runtime
// and measures what each costs the host while all run, for comparison
// with k booted sandboxes.
func clonesAtOnce(k int) scenario {
	return scenario{key: fmt.Sprintf("clones_%d", k), paths: map[string]setupFunc{
		pathRuntime: func(ctx context.Context, e *env) (iterFunc, func(), error) {
			tmpl, drop, err := benchTemplate(ctx, e)
			if err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) {
				ids := make([]string, k)
				errs := make([]error, k)
				var wg sync.WaitGroup
				for i := range k {
					ids[i] = e.newID("k")
					e.track.addSandbox(ids[i])
					wg.Go(func() {
						_, errs[i] = e.tpl.Run(ctx, tmpl, template.CloneOptions{ID: ids[i]})
					})
				}
				wg.Wait()
				var fleet float64
				err := errors.Join(errs...)
				if err == nil {
					_, fleet, err = sharedMemory(ctx, e, ids)
				}
				for _, id := range ids {
					wg.Go(func() { e.sandboxDone(id) })
				}
				wg.Wait()
				if err != nil {
					return nil, err
				}
				return sample{fleetKey("clones", k): fleet}, nil
			}, drop, nil
		},
	}}
}

// memKey names the per-sandbox memory measured with k sandboxes running.
func memKey(k int) string { return fmt.Sprintf("memory_at_%d", k) }

// addPhases splits a start into its phases: spawn → API ready (version
// answered), the configuration requests, InstanceStart, and the wait for
// the console marker. A phase whose instants are unknown is left out.
func addPhases(s sample, t0, api, config, instance, end time.Time) {
	marks := []time.Time{t0, api, config, instance, end}
	for i, key := range []string{"start_api", "start_config", "start_instance", "start_console"} {
		if !marks[i].IsZero() && !marks[i+1].IsZero() {
			s[key] = seconds(marks[i+1].Sub(marks[i]))
		}
	}
}
