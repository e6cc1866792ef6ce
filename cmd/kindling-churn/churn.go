package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/sandbox"
)

// guestMessage is what the churn guest prints before it halts.
const guestMessage = "kindling-churn guest up"

// churner holds a run's set-up: the state root, the guest and the binaries.
type churner struct {
	c       config
	tmp     string // temporary directory for builds and the guest; removed at the end
	ownRoot bool   // the root is temporary and removed at the end
	root    string
	kernel  string
	rt      *sandbox.Runtime
	net     *netEnv // with --net slot or cni
}

// setUp builds or finds what the run needs and opens the state root.
func setUp(ctx context.Context, c config) (_ *churner, err error) {
	tmp, err := os.MkdirTemp("", "kchurn-")
	if err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	ch := &churner{c: c, tmp: tmp}
	defer func() {
		if err != nil {
			ch.tearDown()
		}
	}()
	ch.kernel = filepath.Join(tmp, "guest.elf")
	if err := guest.WriteFile(ch.kernel, guest.Options{Message: guestMessage, Mode: guest.Halt}); err != nil {
		return nil, fmt.Errorf("write the test guest: %w", err)
	}
	if c.fake {
		ch.c.firecracker = filepath.Join(tmp, "fake-firecracker")
		if err := goBuild(ctx, "./internal/cmd/fake-firecracker", ch.c.firecracker); err != nil {
			return nil, err
		}
	}
	if ch.c.firecracker, err = filepath.Abs(ch.c.firecracker); err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	if c.mode != modeLib && c.kindling == "" {
		ch.c.kindling = filepath.Join(tmp, "kindling")
		if err := goBuild(ctx, "./cmd/kindling", ch.c.kindling); err != nil {
			return nil, fmt.Errorf("%w (or give --kindling PATH)", err)
		}
	}
	ch.root = c.root
	if ch.root == "" {
		// Short, so that socket paths stay far below 108 bytes.
		if ch.root, err = os.MkdirTemp("", "kcr"); err != nil {
			return nil, fmt.Errorf("make the state root: %w", err)
		}
		ch.ownRoot = true
	}
	if ch.root, err = filepath.Abs(ch.root); err != nil {
		return nil, fmt.Errorf("state root: %w", err)
	}
	if ents, err := os.ReadDir(ch.root); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				return nil, usagef("--root %s holds %s: give an empty or new directory", ch.root, e.Name())
			}
		}
	}
	if ch.rt, err = sandbox.Open(ch.root); err != nil {
		return nil, err
	}
	if c.net == netSlot || c.net == netCNI {
		if ch.net, err = newNetEnv(c, tmp); err != nil {
			return nil, err
		}
	}
	return ch, nil
}

// tearDown removes the temporary directories.
func (ch *churner) tearDown() {
	if ch.net != nil {
		if err := ch.net.close(); err != nil {
			fmt.Fprintf(os.Stderr, "kindling-churn: %v\n", err)
		}
	}
	if ch.ownRoot && ch.root != "" {
		os.RemoveAll(ch.root)
	}
	os.RemoveAll(ch.tmp)
}

// phases of a cycle, in order.
var phases = []string{"create", "start", "stop", "rm"}

// cycleResult is one cycle's timings (per phase) or why it failed.
type cycleResult struct {
	took  time.Duration
	phase [4]time.Duration
	err   error
}

// pathResult is what one path's cycles gave.
type pathResult struct {
	name   string
	cycles []cycleResult
	total  time.Duration
	taps   []string // tap names its sandboxes owned
}

// cycler runs one cycle for sandbox id and returns its taps.
type cycler func(ctx context.Context, id string, res *cycleResult) []string

// churn runs the cycles, checks for leaks and prints the summary.
func (ch *churner) churn(ctx context.Context, stdout io.Writer) error {
	primeRuntime()
	base := takeHostSnapshot()
	var results []*pathResult
	if ch.c.mode != modeCLI {
		results = append(results, ch.runPath(ctx, "library", "churn-l", ch.libCycle))
	}
	if ch.c.mode != modeLib && ctx.Err() == nil {
		results = append(results, ch.runPath(ctx, "cli", "churn-c", ch.cliCycle))
	}

	check := leakCheck{root: ch.root, net: ch.net}
	for _, r := range results {
		check.taps = append(check.taps, r.taps...)
	}
	leaks := check.findLeaks(base, ch.c.settle)
	if len(leaks) > 0 {
		// Clean up what the runtime can, so that a leaky run does not
		// leave VMMs behind; the leaks are reported all the same.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		ch.forceClean(cctx)
		cancel()
	}
	failed := ch.summary(stdout, results, leaks)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	var errs []error
	if failed > 0 {
		errs = append(errs, fmt.Errorf("%d %w", failed, errCycles))
	}
	if len(leaks) > 0 {
		errs = append(errs, fmt.Errorf("%d %w", len(leaks), errLeaks))
	}
	return errors.Join(errs...)
}

// runPath runs the K cycles of one path, giving up after maxFailures.
func (ch *churner) runPath(ctx context.Context, name, prefix string, cycle cycler) *pathResult {
	r := &pathResult{name: name}
	began := time.Now()
	failures := 0
	for i := 0; i < ch.c.k && ctx.Err() == nil; i++ {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		var res cycleResult
		t0 := time.Now()
		r.taps = append(r.taps, cycle(ctx, id, &res)...)
		res.took = time.Since(t0)
		if res.err != nil {
			res.err = fmt.Errorf("cycle %d (%s): %w", i, id, res.err)
			failures++
			// Clean up the failed cycle's sandbox so that the next ones
			// and the leak checks see only what the runtime itself leaks.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ch.c.timeout)
			ch.rt.Remove(cctx, id, true)
			cancel()
		}
		r.cycles = append(r.cycles, res)
		if failures >= ch.c.maxFailures {
			break
		}
	}
	r.total = time.Since(began)
	return r
}

// spec is the sandbox every cycle creates.
func (ch *churner) spec(id string) sandbox.Spec {
	s := sandbox.Spec{ID: id, Kernel: ch.kernel, Firecracker: ch.c.firecracker, VCPUs: ch.c.cpus, MemoryMiB: ch.c.memoryMiB}
	if ch.c.net == "auto" {
		s.Net = []sandbox.Net{{Auto: true}}
	}
	if ch.net != nil {
		ch.net.apply(&s)
	}
	return s
}

// libCycle runs create, start, stop and remove through package sandbox.
func (ch *churner) libCycle(ctx context.Context, id string, res *cycleResult) []string {
	var taps []string
	steps := []func(ctx context.Context) error{
		func(ctx context.Context) error {
			in, err := ch.rt.Create(ctx, ch.spec(id), sandbox.CreateOptions{})
			for _, t := range in.Taps {
				taps = append(taps, t.Name)
			}
			return err
		},
		func(ctx context.Context) error {
			in, err := ch.rt.Start(ctx, id)
			ch.net.saw(in)
			if err == nil && (in.Status != sandbox.Running || in.PID == 0 || in.MonitorPID == 0) {
				err = fmt.Errorf("started, but status %s, pid %d, monitor pid %d", in.Status, in.PID, in.MonitorPID)
			}
			return err
		},
		func(ctx context.Context) error {
			if err := ch.rt.Stop(ctx, id); err != nil {
				return err
			}
			in, err := ch.rt.Inspect(ctx, id)
			if err == nil && (in.Status != sandbox.Exited || in.Exit == nil) {
				err = fmt.Errorf("stopped, but status %s, exit %+v", in.Status, in.Exit)
			}
			return err
		},
		func(ctx context.Context) error {
			if err := ch.rt.Remove(ctx, id, false); err != nil {
				return err
			}
			if _, err := ch.rt.Inspect(ctx, id); !errors.Is(err, sandbox.ErrNotFound) {
				return fmt.Errorf("removed, but inspect gives %v", err)
			}
			return nil
		},
	}
	ch.timePhases(ctx, steps, res)
	return taps
}

// timePhases runs the steps of a cycle, each bounded by the timeout, and
// records their times, stopping at the first error.
func (ch *churner) timePhases(ctx context.Context, steps []func(context.Context) error, res *cycleResult) {
	for i, step := range steps {
		sctx, cancel := context.WithTimeout(ctx, ch.c.timeout)
		t0 := time.Now()
		err := step(sctx)
		res.phase[i] = time.Since(t0)
		cancel()
		if err != nil {
			res.err = fmt.Errorf("%s: %w", phases[i], err)
			return
		}
	}
}

// cliCycle runs create, start, stop and rm through the kindling CLI.
func (ch *churner) cliCycle(ctx context.Context, id string, res *cycleResult) []string {
	var taps []string
	create := []string{"create", "--json", "--name", id, "--kernel", ch.kernel, "--firecracker", ch.c.firecracker,
		"--cpus", strconv.Itoa(ch.c.cpus), "--memory", strconv.Itoa(ch.c.memoryMiB)}
	if ch.c.net == "auto" {
		create = append(create, "--net", "auto")
	}
	if ch.net != nil {
		create = append(create, ch.net.cliArgs()...)
	}
	timeout := ch.c.timeout.String()
	steps := []func(ctx context.Context) error{
		func(ctx context.Context) error {
			out, err := ch.kindling(ctx, create...)
			if err != nil {
				return err
			}
			var in struct {
				ID   string `json:"id"`
				Taps []struct {
					Name string `json:"name"`
				} `json:"taps"`
			}
			if err := json.Unmarshal(out, &in); err != nil {
				return fmt.Errorf("kindling create --json printed %q: %w", out, err)
			}
			for _, t := range in.Taps {
				taps = append(taps, t.Name)
			}
			if in.ID != id {
				return fmt.Errorf("kindling create --json printed id %q, want %q", in.ID, id)
			}
			return nil
		},
		func(ctx context.Context) error {
			_, err := ch.kindling(ctx, "start", "--timeout", timeout, "--firecracker", ch.c.firecracker, id)
			if ch.net != nil {
				if in, ierr := ch.rt.Inspect(ctx, id); ierr == nil {
					ch.net.saw(in)
				}
			}
			return err
		},
		func(ctx context.Context) error {
			_, err := ch.kindling(ctx, "stop", "--timeout", timeout, id)
			return err
		},
		func(ctx context.Context) error {
			_, err := ch.kindling(ctx, "rm", id)
			return err
		},
	}
	ch.timePhases(ctx, steps, res)
	return taps
}

// cliGrace is how long past its own --timeout a kindling command may take
// before it is killed as hung.
const cliGrace = 5 * time.Second

// kindling runs the CLI on the churn's state root and returns its stdout;
// an error holds its stderr.
func (ch *churner) kindling(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ch.c.timeout+cliGrace)
	defer cancel()
	cmd := exec.CommandContext(ctx, ch.c.kindling, append([]string{"--root", ch.root}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kindling %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// forceClean removes every sandbox left under the root.
func (ch *churner) forceClean(ctx context.Context) {
	infos, _ := ch.rt.List(ctx, sandbox.ListOptions{})
	for _, in := range infos {
		ch.rt.Remove(ctx, in.ID, true)
	}
	ch.rt.GC(ctx)
}

// primeRuntime makes the Go runtime create the descriptors it keeps for the
// life of the process (the network poller's), so they are not taken for
// leaks.
func primeRuntime() {
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
}

// summary prints the results and the leaks, and returns the number of
// failed cycles.
func (ch *churner) summary(w io.Writer, results []*pathResult, leaks []string) int {
	fmt.Fprintf(w, "kindling-churn: firecracker %s, %d vCPU, %d MiB, net %s, state root %s\n",
		ch.c.firecracker, ch.c.cpus, ch.c.memoryMiB, ch.c.net, ch.root)
	failed := 0
	for _, r := range results {
		var ok []cycleResult
		var errs []error
		for _, c := range r.cycles {
			if c.err != nil {
				errs = append(errs, c.err)
				continue
			}
			ok = append(ok, c)
		}
		failed += len(errs)
		fmt.Fprintf(w, "%-8s %d cycles (%d ok, %d failed) in %v", r.name+":", len(r.cycles), len(ok), len(errs), r.total.Round(time.Millisecond))
		if len(ok) > 0 {
			took := make([]time.Duration, len(ok))
			for i, c := range ok {
				took[i] = c.took
			}
			fmt.Fprintf(w, "; per cycle median %v, p90 %v, max %v",
				round(quantile(took, 0.5)), round(quantile(took, 0.9)), round(slices.Max(took)))
			var parts []string
			for p, name := range phases {
				for i, c := range ok {
					took[i] = c.phase[p]
				}
				parts = append(parts, fmt.Sprintf("%s %v", name, round(quantile(took, 0.5))))
			}
			fmt.Fprintf(w, " (medians: %s)", strings.Join(parts, ", "))
		}
		fmt.Fprintln(w)
		for _, err := range errs {
			fmt.Fprintf(w, "  failed: %v\n", oneLine(err.Error()))
		}
	}
	if len(leaks) == 0 {
		fmt.Fprintln(w, "leaks:   none")
	} else {
		fmt.Fprintf(w, "leaks:   %d\n", len(leaks))
		for _, l := range leaks {
			fmt.Fprintf(w, "  leak: %s\n", l)
		}
	}
	return failed
}

// quantile returns the q-quantile of ds (nearest rank), sorting ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
