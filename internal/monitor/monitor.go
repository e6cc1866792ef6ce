package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/vmm"
)

// StartTimeout bounds a monitor's start of the VMM (the starter can abort
// earlier with SIGTERM).
const StartTimeout = 60 * time.Second

// releaseTimeout bounds the helper that tears down a sandbox's networks.
const releaseTimeout = 2 * time.Minute

// Hooks is what the program running the monitor adds to it.
type Hooks struct {
	// ReleaseNetwork tears down the CNI networks of sandbox id, under its
	// lock, and clears them from its record; when the record asks for it
	// and the networks are gone, it removes the sandbox. Nil: the monitor
	// runs Plan.Helper for it.
	ReleaseNetwork func(ctx context.Context, st *store.Store, id string) error
	// StartDNS starts the DNS forwarder of sandbox id's slot network in
	// this process; stop ends it. Failures are logged to log: the guest
	// then has no resolver. Nil: the monitor runs Plan.Helper for it.
	StartDNS func(st *store.Store, id string, log *slog.Logger) (stop func())
}

// Requested reports whether this process was started as a monitor (the
// environment names a state root and a sandbox).
func Requested() bool {
	return os.Getenv(EnvRoot) != "" && os.Getenv(EnvID) != ""
}

// Main runs the monitor of the sandbox the environment names, with the
// plan read from stdin, and returns the process's exit code. Its log
// (stderr) is the sandbox's monitor.log.
func Main(h Hooks) int {
	root, id := os.Getenv(EnvRoot), os.Getenv(EnvID)
	os.Unsetenv(EnvRoot)
	os.Unsetenv(EnvID)
	// The report pipe must not leak into the VMM: the starter reads until
	// every copy of its write end is closed.
	syscall.CloseOnExec(ReportFD)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("sandbox", id)
	report := os.NewFile(ReportFD, "report")
	reported := false
	say := func(err error) {
		if reported {
			return
		}
		reported = true
		var rep Report
		if err != nil {
			rep.Error, rep.Kind = err.Error(), KindCode(err)
		}
		b, _ := json.Marshal(rep)
		if _, werr := report.Write(b); werr != nil {
			log.Info("nobody awaits the start report", "err", werr)
		}
		report.Close()
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)

	plan, err := readPlan(os.Stdin)
	if err != nil {
		log.Error("read the plan", "err", err)
		say(err)
		return 1
	}
	st, err := store.Open(root)
	if err != nil {
		say(err)
		return 1
	}
	mon := &monitor{st: st, id: id, plan: plan, hooks: h, log: log}
	// The guest's resolver starts with the VMM, and is up before the
	// start is reported.
	dnsReady, stopDNS := mon.startDNS()
	m, err := mon.start(term)
	if err != nil {
		stopDNS()
	}
	if errors.Is(err, errAbandoned) {
		// Not this sandbox's monitor: the Start that spawned it died
		// before recording it. Its VMM is killed and nothing recorded.
		log.Error("start abandoned", "err", err)
		say(err)
		return 1
	}
	if err != nil {
		log.Error("start failed", "err", err)
		mon.finish(nil, err)
		say(err)
		return 1
	}
	dnsReady()
	say(nil)
	log.Info("VMM running", "pid", m.State().PID)

	for {
		select {
		case <-m.Done():
			stopDNS()
			status, _ := m.Wait(context.Background())
			log.Info("VMM exited", "status", status.String())
			mon.finish(&status, nil)
			return 0
		case sig := <-term:
			log.Info("stopping the VMM", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := m.Stop(ctx); err != nil {
				log.Error("stop", "err", err)
			}
			cancel()
		}
	}
}

// readPlan reads and checks the plan on r.
func readPlan(r *os.File) (*Plan, error) {
	b, err := store.ReadLimited(bufio.NewReader(r), "monitor plan", maxPlanSize)
	if err != nil {
		return nil, fmt.Errorf("read the monitor plan: %w", err)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("read the monitor plan: %w: %w", errdefs.ErrCorrupt, err)
	}
	if p.Version != PlanVersion {
		exe, _ := os.Executable()
		return nil, fmt.Errorf("%w: the monitor %s reads plan version %d, its starter wrote version %d: "+
			"install kindling-monitor from the same build as kindling (go install ./cmd/...)", errdefs.ErrInvalid, exe, PlanVersion, p.Version)
	}
	if p.Config.RunDir == "" || p.Console == "" {
		return nil, fmt.Errorf("read the monitor plan: %w: it names no run directory or console log", errdefs.ErrCorrupt)
	}
	if err := checkJail(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

// monitor holds what the monitor process works with.
type monitor struct {
	st    *store.Store
	id    string
	plan  *Plan
	hooks Hooks
	log   *slog.Logger
	// console is the bounded console log; nil until start opens it.
	console *ConsoleLog
}

// errAbandoned: the record does not name this process as the sandbox's
// starting monitor.
var errAbandoned = errors.New("the record does not name this monitor: its start was abandoned")

// start boots the VMM and records it as running. A signal on term aborts
// the start.
func (mon *monitor) start(term <-chan os.Signal) (*vmm.Machine, error) {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	go func() {
		select {
		case <-term:
			cancel()
		case <-ctx.Done():
		}
	}()

	dir, err := mon.st.Dir(mon.id)
	if err != nil {
		return nil, err
	}
	cfg := mon.plan.Config
	if filepath.Clean(cfg.RunDir) != dir {
		return nil, fmt.Errorf("%w: the plan's run directory %s is not the sandbox's, %s", errdefs.ErrInvalid, cfg.RunDir, dir)
	}
	// Firecracker's log is the sandbox's, not the driver's: made here, it
	// outlives a failed start (the driver removes only a log it created),
	// so 'kindling logs --vmm' can tell why, until the sandbox is removed.
	// It is created without following a link, so that Firecracker, which
	// opens it by path, appends to a file of kindling's.
	if cfg.LogPath != "" {
		if err := prepareLog(dir, cfg.LogPath); err != nil {
			return nil, err
		}
	}
	console, err := OpenConsoleLog(dir, mon.plan.Console, 0, mon.log)
	if err != nil {
		return nil, err
	}
	mon.console = console
	cfg.Console = console
	opts := []vmm.Option{vmm.WithLogger(mon.log)}
	if mon.plan.PlaceholdersReadWrite {
		opts = append(opts, vmm.WithPlaceholderAccess(vmm.PlaceholdersReadWrite))
	}

	var m *vmm.Machine
	if r := mon.plan.Restore; r != nil {
		rc := vmm.RestoreConfig{Snapshot: r.Snapshot, Config: cfg, Resume: true}
		for _, o := range r.NetworkOverrides {
			rc.NetworkOverrides = append(rc.NetworkOverrides, vmm.NetworkOverride{IfaceID: o.IfaceID, TapName: o.TapName})
		}
		m, err = vmm.Restore(ctx, rc, opts...)
	} else {
		m, err = vmm.New(cfg, opts...)
		if err == nil {
			err = m.Start(ctx)
		}
	}
	if err != nil {
		return nil, err
	}

	l, err := mon.st.Lock(ctx, mon.id)
	var rec record
	if err == nil {
		defer l.Unlock()
		err = l.Load(&rec)
	}
	if err == nil {
		// The Start that spawned this monitor holds the lock until it has
		// recorded it; a record that does not name it means that Start
		// died first, and a VMM nobody can find must not run.
		var status string
		var ref ProcRef
		err = errors.Join(rec.get("status", &status), rec.get("monitor", &ref))
		if err == nil && (status != StatusStarting || ref.PID != os.Getpid()) {
			err = errAbandoned
		}
	}
	if err == nil {
		err = errors.Join(rec.set("status", StatusRunning), rec.set("machine", m.State()), rec.set("started_at", time.Now().UTC()))
	}
	if err == nil {
		err = l.Save(rec)
	}
	if err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer stopCancel()
		return nil, errors.Join(fmt.Errorf("record the running VMM: %w", err), m.Kill(stopCtx))
	}
	return m, nil
}

// prepareLog creates the file path, empty unless it exists, in dir
// without following a link when it is in dir.
func prepareLog(dir, path string) error {
	var f *os.File
	var err error
	if filepath.Dir(path) == dir {
		f, err = store.OpenInDir("sandbox directory", dir, filepath.Base(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
	if err != nil {
		return fmt.Errorf("prepare the VMM's log: %w", err)
	}
	fi, err := f.Stat()
	f.Close()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err != nil {
		return fmt.Errorf("prepare the VMM's log: %w", err)
	}
	return nil
}

// finish records how the VMM ended (status), or why it never started
// (startErr), releases the sandbox's host resources, and removes the
// sandbox if it was created to be removed.
func (mon *monitor) finish(status *vmm.ExitStatus, startErr error) {
	if mon.console != nil {
		mon.console.Close()
	}
	if mon.record(status, startErr) {
		mon.releaseNetwork()
	}
}

// record records the exit, deletes the taps and sockets, and removes the
// sandbox if asked and nothing else is held; it reports whether the
// sandbox still holds CNI networks to tear down.
func (mon *monitor) record(status *vmm.ExitStatus, startErr error) (netHeld bool) {
	ctx := context.Background()
	l, err := mon.st.Lock(ctx, mon.id)
	if err != nil {
		mon.log.Error("record the exit", "err", err)
		return false
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		mon.log.Error("record the exit", "err", err)
		return false
	}
	exit := &Exit{Code: -1, At: time.Now().UTC()}
	switch {
	case startErr != nil:
		exit.Error = startErr.Error()
	case status != nil && status.Signal != 0:
		exit.Signal = kunix.SignalName(status.Signal)
	case status != nil && !status.Unknown:
		exit.Code = status.Code
	default:
		exit.Error = "exit status unknown"
	}
	// "monitor" stays: Wait and gc wait on it until this process is gone.
	if err := errors.Join(rec.set("status", StatusExited), rec.set("exit", exit)); err != nil {
		mon.log.Error("record the exit", "err", err)
		return false
	}
	var taps []Tap
	if err := rec.get("taps", &taps); err != nil {
		mon.log.Error("release taps", "err", err)
	}
	for _, t := range taps {
		if !t.Owned {
			continue
		}
		if err := netdev.DeleteTap(ctx, t.Name, t.NetNS); err != nil && !errors.Is(err, netdev.ErrNotFound) {
			mon.log.Error("release taps", "err", err)
		}
	}
	for _, name := range mon.plan.Sockets {
		if filepath.Base(name) == name {
			os.Remove(filepath.Join(l.Dir(), name))
		}
	}
	// The jail goes at every end; the VMM, its only user, has exited.
	var machine vmm.MachineState
	if err := rec.get("machine", &machine); err != nil {
		mon.log.Error("clean the jail", "err", err)
	}
	if err := mon.cleanJail(machine.Pool); err != nil {
		mon.log.Error("clean the jail", "err", err)
	}
	netHeld = rec.held("net_active") || rec.held("network")
	var autoRemove bool
	if err := rec.get("auto_remove", &autoRemove); err != nil {
		mon.log.Error("auto-remove", "err", err)
	}
	if autoRemove && !netHeld {
		if err := mon.releaseJail(); err != nil {
			mon.log.Error("release the jail uid", "err", err)
		}
		if err := l.Remove(); err != nil {
			mon.log.Error("auto-remove", "err", err)
		}
		return false
	}
	if err := l.Save(rec); err != nil {
		mon.log.Error("record the exit", "err", err)
	}
	return netHeld
}

// releaseNetwork tears down the sandbox's CNI networks: through the hook,
// or by running the starter's program for it. On failure the record keeps
// the networks, and stop, rm or gc try again.
func (mon *monitor) releaseNetwork() {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	var err error
	if mon.hooks.ReleaseNetwork != nil {
		err = mon.hooks.ReleaseNetwork(ctx, mon.st, mon.id)
	} else {
		err = mon.runHelper(ctx)
	}
	if err != nil {
		mon.log.Error("tear down the network", "err", err)
	}
}

// runHelper runs the plan's helper program to tear down the networks.
func (mon *monitor) runHelper(ctx context.Context) error {
	if mon.plan.Helper == "" {
		return errors.New("the sandbox holds CNI networks and its starter named no program to tear them down")
	}
	cmd := exec.CommandContext(ctx, mon.plan.Helper)
	cmd.Args = []string{ReleaseLogPrefix, mon.id}
	cmd.Env = append(os.Environ(), EnvRoot+"="+mon.st.Root(), EnvID+"="+mon.id, EnvRelease+"="+ReleaseNetwork)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("run %s to tear down the network: %w", mon.plan.Helper, err)
	}
	return nil
}
