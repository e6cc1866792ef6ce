// Command kindling-bench measures kindling against the raw floor: every
// operation (spawn, start, stop, pause, resume, snapshot, restore, many VMs
// at once, memory per sandbox) is timed N times on a raw baseline — a
// minimal client written here that execs Firecracker and speaks its HTTP
// API directly — and on kindling's paths: the vmm driver (lib), the sandbox
// runtime in this process (runtime) and the kindling executable (cli). The
// paths are interleaved (raw, lib, runtime, cli, raw, …) so that drift in
// the host hits them all alike. It prints the median, the 90th percentile
// and the ratio of medians to raw for each, next to kindling's targets.
//
// It runs the Firecracker named by $KINDLING_FIRECRACKER and removes
// everything it started or created when it ends, also on Ctrl-C.
//
// Usage:
//
//	KINDLING_FIRECRACKER=/path/to/firecracker kindling-bench [-n 50] [--json] [--svg FILE]
//	    [--kindling PATH] [--concurrency 20,50] [--ops start,stop,...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case interrupted:
		fmt.Fprintf(os.Stderr, "kindling-bench: interrupted (%v)\n", err)
		os.Exit(130)
	default:
		fmt.Fprintf(os.Stderr, "kindling-bench: %v\n", err)
		os.Exit(1)
	}
}

// envFirecracker names the Firecracker the bench runs.
const envFirecracker = "KINDLING_FIRECRACKER"

// config is the command line.
type config struct {
	n        int
	kindling string
	daemon   string
	monitor  string
	spares   int
	asJSON   bool
	svg      string
	conc     []int
	ops      []string
	tmp      string
	phases   bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("kindling-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.n, "n", 50, "measure each operation `N` times per path")
	fs.StringVar(&c.kindling, "kindling", "", "the kindling executable to measure (default: go build ./cmd/kindling)")
	fs.StringVar(&c.daemon, "kindlingd", "", "the kindlingd executable the server scenarios run (default: go build ./cmd/kindlingd)")
	fs.StringVar(&c.monitor, "kindlingd-monitor", "", "have kindlingd start sandboxes with this monitor `EXECUTABLE` (its --monitor; default its own)")
	fs.IntVar(&c.spares, "kindlingd-spares", -1, "run kindlingd with --spare-monitors `N` (default: its default)")
	fs.BoolVar(&c.phases, "phases", false, "also split the raw and lib starts into phases (the lib's from its debug log, which costs it a little)")
	fs.BoolVar(&c.asJSON, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&c.svg, "svg", "", "also write a bar chart of the ratios to `FILE` (SVG)")
	fs.StringVar(&c.tmp, "tmp", "", "make the bench's directories (run dirs, state root, snapshots) under `DIR` (default $TMPDIR or /tmp); a tmpfs such as /run matches kindling's default state root")
	concFlag := fs.String("concurrency", "20,50", "start this many VMs at once (comma-separated `LIST`)")
	opsFlag := fs.String("ops", "", "measure only these scenarios (comma-separated: spawn,start,stop,stop_exited,pause,snapshot,restore,clone,agent_exec,agent_files,concurrent_K,clones_K,server_start,server_create,server_concurrent_K,server_memory,net_setup,net_setup_pool,net_start)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s=PATH kindling-bench [flags]\n\nMeasures kindling against a raw Firecracker client.\n\n", envFirecracker)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: see -h", fs.Arg(0))
	}
	if c.n < 1 {
		return c, fmt.Errorf("-n %d: give at least 1", c.n)
	}
	for f := range strings.SplitSeq(*concFlag, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		k, err := strconv.Atoi(f)
		if err != nil || k < 1 {
			return c, fmt.Errorf("--concurrency %q: give positive whole numbers like 20,50", *concFlag)
		}
		c.conc = append(c.conc, k)
	}
	for f := range strings.SplitSeq(*opsFlag, ",") {
		if f = strings.TrimSpace(f); f != "" {
			c.ops = append(c.ops, f)
		}
	}
	return c, nil
}

// run runs the bench with the command line args.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	fc := os.Getenv(envFirecracker)
	if fc == "" {
		return fmt.Errorf("%s is not set: point it at a firecracker executable", envFirecracker)
	}
	if fi, err := os.Stat(fc); err != nil {
		return fmt.Errorf("%s=%q: %w", envFirecracker, fc, err)
	} else if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s=%q: not an executable file", envFirecracker, fc)
	}
	for flag, path := range map[string]string{"--kindlingd": cfg.daemon, "--kindlingd-monitor": cfg.monitor} {
		if err := checkExecutable(flag, path); err != nil {
			return err
		}
	}
	scens := scenarios(cfg.conc)
	if len(cfg.ops) > 0 {
		scens = slices.DeleteFunc(scens, func(s scenario) bool { return !slices.Contains(cfg.ops, s.key) })
		if len(scens) == 0 {
			return fmt.Errorf("--ops %s: no such scenario", strings.Join(cfg.ops, ","))
		}
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "kindling-bench: "+format+"\n", a...) }
	if err := agentReady(); err != nil && len(cfg.ops) == 0 {
		// Measured when asked for by name (--ops), where the failure shows.
		scens = slices.DeleteFunc(scens, func(s scenario) bool { return strings.HasPrefix(s.key, "agent_") })
		progress("skipping agent_exec and agent_files: %v", err)
	}

	if err := netReady(); err != nil && len(cfg.ops) == 0 {
		scens = slices.DeleteFunc(scens, func(s scenario) bool { return strings.HasPrefix(s.key, "net_") })
		progress("skipping the net_ scenarios: %v", err)
	}
	e, err := newEnv(ctx, fc, cfg.kindling, cfg.tmp, progress)
	if err != nil {
		return err
	}
	e.phases = cfg.phases
	e.daemon.path, e.daemon.monitor, e.daemon.spares = cfg.daemon, cfg.monitor, cfg.spares
	defer func() {
		if cerr := e.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	rep := &Report{
		Date:               time.Now().UTC().Truncate(time.Second),
		Command:            strings.Join(append([]string{"kindling-bench"}, args...), " "),
		Firecracker:        fc,
		FirecrackerVersion: firecrackerVersion(ctx, fc),
		Kindling:           kindlingVersion(ctx, e.kindling),
		Monitor:            monitorText(e.rt),
		N:                  cfg.n,
		Concurrency:        cfg.conc,
		CPUs:               runtime.NumCPU(),
		LoadBefore:         loadAverage(),
	}
	res := newResults()
	for _, s := range scens {
		if err := measure(ctx, e, s, cfg.n, res, progress); err != nil {
			return err
		}
	}
	rep.LoadAfter = loadAverage()
	rep.Rows = res.rows(metricDefs(cfg.conc, cfg.phases))
	if cfg.asJSON {
		err = writeJSON(stdout, rep)
	} else {
		err = writeTable(stdout, rep)
	}
	if err != nil {
		return err
	}
	if cfg.svg != "" {
		if err := writeChart(cfg.svg, rep); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
	}
	return nil
}

// measure runs one scenario: it sets up each path, runs one discarded
// warm-up iteration and then n measured ones per path, interleaving the
// paths, and tears the paths down. A path that fails is recorded and left
// out of the rest of the scenario; only an interrupt stops the run.
func measure(ctx context.Context, e *env, s scenario, n int, res *results, progress func(string, ...any)) error {
	progress("%s: %d paths × %d", s.key, len(s.paths), n)
	type state struct {
		iter     iterFunc
		teardown func()
		failed   bool
	}
	states := map[string]*state{}
	defer func() {
		for _, st := range states {
			if st.teardown != nil {
				st.teardown()
			}
		}
	}()
	for _, p := range pathOrder {
		setup, ok := s.paths[p]
		if !ok {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, opTimeout)
		iter, teardown, err := setup(sctx, e)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			res.fail(s.key, p, fmt.Errorf("set up: %w", err))
			continue
		}
		states[p] = &state{iter: iter, teardown: teardown}
	}
	for i := -1; i < n; i++ { // iteration -1 warms up
		for _, p := range pathOrder {
			st := states[p]
			if st == nil || st.failed {
				continue
			}
			ictx, cancel := context.WithTimeout(ctx, opTimeout)
			smp, err := st.iter(ictx)
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				st.failed = true
				res.fail(s.key, p, err)
				progress("%s: %s failed: %v", s.key, p, err)
				continue
			}
			if i >= 0 {
				res.add(p, smp)
			}
		}
	}
	return nil
}

// firecrackerVersion asks the executable for its version.
func firecrackerVersion(ctx context.Context, fc string) string {
	out, err := exec.CommandContext(ctx, fc, "--version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(strings.TrimPrefix(line, "Firecracker"))
}

// kindlingVersion asks the kindling executable for its version.
func kindlingVersion(ctx context.Context, exe string) string {
	out, err := exec.CommandContext(ctx, exe, "version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimPrefix(line, "kindling ")
}

// loadAverage returns the host's 1-minute load average, "?" if unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
