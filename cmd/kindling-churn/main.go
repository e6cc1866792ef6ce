// Command kindling-churn checks that kindling never leaks. It runs K
// create/start/stop/rm cycles through the library (package sandbox) and
// through the kindling CLI, then checks that nothing is left: no process
// (no zombie, none whose command line, environment or working directory
// names the state root, no child of its own), none of its own file
// descriptors or goroutines, nothing under the state root but the root's own
// hidden directories (no sandbox directory, socket or lock file), no tap of
// a sandbox (with --net auto, as root) and no new network namespace. It
// prints a summary (cycles, time, per-cycle median, leaks found) and exits
// 1 on any leak or failed cycle, 2 on a usage error.
//
// Usage:
//
//	kindling-churn [-k 50] [--firecracker PATH | --fake] [--kindling PATH] [--mode both|lib|cli]
//	               [--net none|auto|slot|cni [--publish H:G]... [--allow-egress RULE]...]
//
// With --net slot or cni the run makes a network namespace of its own that
// plays the host (every sandbox's --netns; for cni also a bridge network
// with host-local addresses in a conf dir of its own), and the leak audit
// adds the network package's: namespaces, slot veths and taps, nf_tables
// tables, host-local leases.
//
// Its library-path monitors are this program re-executed, which is why main
// calls sandbox.MonitorMain first. It is a test tool, not part of the
// product.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
)

func main() {
	sandbox.MonitorMain()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// Sentinel errors of a run.
var (
	// errLeaks: the cycles left something behind.
	errLeaks = errors.New("leaks found")
	// errCycles: some cycles failed.
	errCycles = errors.New("cycles failed")
)

// usageError is a mistake on the command line; it exits with status 2.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() + " (run 'kindling-churn -h')" }
func (u *usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitCode prints err and returns the exit status it calls for.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "kindling-churn: %v\n", err)
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// Modes say which paths the cycles take.
const (
	modeBoth = "both"
	modeLib  = "lib"
	modeCLI  = "cli"
)

// config is the parsed command line.
type config struct {
	k           int
	mode        string
	kindling    string // CLI executable; "" to build one
	firecracker string
	fake        bool // build and use the fake Firecracker
	root        string
	net         string // "none", "auto", "slot" or "cni"
	publish     []string
	allowEgress []string
	memoryMiB   int
	cpus        int
	timeout     time.Duration // bound of each start, stop and remove
	settle      time.Duration // how long leaks may take to go away
	maxFailures int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("kindling-churn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.k, "k", 50, "number of create/start/stop/rm `cycles` per path")
	fs.StringVar(&c.mode, "mode", modeBoth, "paths to churn: both, lib (package sandbox) or cli (the kindling binary)")
	fs.StringVar(&c.kindling, "kindling", "", "kindling CLI `PATH` (default: build ./cmd/kindling with go build)")
	fs.StringVar(&c.firecracker, "firecracker", "", "firecracker `PATH` (default $"+sandbox.EnvFirecracker+")")
	fs.BoolVar(&c.fake, "fake", false, "build and use kindling's fake Firecracker")
	fs.StringVar(&c.root, "root", "", "state root `DIR`, empty or new (default: a fresh temporary one, removed at the end)")
	fs.StringVar(&c.net, "net", "none", "network: none, auto (a tap per sandbox), slot (a clone-safe slot) or cni (a bridge network the run makes); all but none need root")
	fs.Func("publish", "publish `HOSTPORT:GUESTPORT` from each sandbox (repeatable; --net slot or cni)", func(v string) error {
		c.publish = append(c.publish, v)
		return nil
	})
	fs.Func("allow-egress", "give each sandbox a deny egress policy allowing `CIDR|DOMAIN` (repeatable; --net slot or cni)", func(v string) error {
		c.allowEgress = append(c.allowEgress, v)
		return nil
	})
	fs.IntVar(&c.memoryMiB, "memory", 128, "guest memory in `MiB`")
	fs.IntVar(&c.cpus, "cpus", 1, "vCPUs per sandbox")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound of each start, stop and rm")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "how long to let processes, descriptors and goroutines go away before calling them leaks")
	fs.IntVar(&c.maxFailures, "max-failures", 5, "give up a path after this many failed cycles")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &usageError{err: err}
	}
	switch {
	case fs.NArg() > 0:
		return c, usagef("unexpected arguments %q", fs.Args())
	case c.k < 1:
		return c, usagef("-k %d: give at least 1 cycle", c.k)
	case c.mode != modeBoth && c.mode != modeLib && c.mode != modeCLI:
		return c, usagef("--mode %q: give both, lib or cli", c.mode)
	case c.net != "none" && c.net != "auto" && c.net != netSlot && c.net != netCNI:
		return c, usagef("--net %q: give none, auto, slot or cni", c.net)
	case c.net != "none" && os.Geteuid() != 0:
		return c, usagef("--net %s creates taps and namespaces and needs root (running as uid %d)", c.net, os.Geteuid())
	case (len(c.publish) > 0 || len(c.allowEgress) > 0) && c.net != netSlot && c.net != netCNI:
		return c, usagef("--publish and --allow-egress need --net slot or --net cni")
	case c.fake && c.firecracker != "":
		return c, usagef("give --firecracker or --fake, not both")
	case c.timeout <= 0 || c.settle < 0:
		return c, usagef("--timeout must be positive and --settle not negative")
	case c.maxFailures < 1:
		return c, usagef("--max-failures must be at least 1")
	}
	if !c.fake && c.firecracker == "" {
		c.firecracker = os.Getenv(sandbox.EnvFirecracker)
		if c.firecracker == "" {
			return c, usagef("no firecracker: give --firecracker PATH, set %s, or use --fake", sandbox.EnvFirecracker)
		}
	}
	return c, nil
}

// run runs kindling-churn with the command line args (without the program
// name), printing its summary on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ch, err := setUp(ctx, c)
	if err != nil {
		return err
	}
	defer ch.tearDown()
	return ch.churn(ctx, stdout)
}
