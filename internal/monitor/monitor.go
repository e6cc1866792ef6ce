package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/internal/vmmproc"
)

// StartTimeout bounds a monitor's start of the VMM: the spawn, then the
// wait for its starter's verdict (the starter can abort earlier).
const StartTimeout = 60 * time.Second

// releaseTimeout bounds the helper that tears down a sandbox's networks.
const releaseTimeout = 2 * time.Minute

// stopGrace is how long the monitor, told to stop (SIGTERM), waits for the
// VMM to end after SIGTERM before it sends SIGKILL. The runtime's Stop asks
// the guest (Ctrl-Alt-Del) through the API itself before it signals.
const stopGrace = 3 * time.Second

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
// environment names a state root and a sandbox, or asks for a spare).
func Requested() bool {
	return os.Getenv(EnvRoot) != "" && (os.Getenv(EnvID) != "" || os.Getenv(EnvSpare) != "")
}

// Main runs the monitor of the sandbox the environment names, with the
// plan read from stdin, and returns the process's exit code. Its log
// (stderr) is the sandbox's monitor.log.
//
// It spawns the VMM, reports it on ReportFD, and waits for its starter's
// Verdict on VerdictFD while the starter configures the VMM through its
// API: a commit records the sandbox running, after which the monitor
// watches the VMM until it exits; an abort, the starter's death (the
// verdict pipe's end) or SIGTERM kills the VMM first.
func Main(h Hooks) int {
	root, id := os.Getenv(EnvRoot), os.Getenv(EnvID)
	spare := os.Getenv(EnvSpare) != ""
	os.Unsetenv(EnvRoot)
	os.Unsetenv(EnvID)
	os.Unsetenv(EnvSpare)
	if os.Getenv(EnvOneProc) != "" {
		os.Unsetenv(EnvOneProc)
		os.Unsetenv("GOMAXPROCS")
	}
	// The pipes must not leak into the VMM or a helper: the starter reads
	// the reports until every copy of their write end is closed.
	syscall.CloseOnExec(ReportFD)
	syscall.CloseOnExec(VerdictFD)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	st, stErr := store.Open(root)
	in := bufio.NewReader(os.Stdin)
	var claimErr error
	if spare {
		// Until it is claimed, a spare has no sandbox, log or work: the
		// default SIGTERM ends it.
		id, claimErr = awaitClaim(in, st, stErr)
		if errors.Is(claimErr, io.EOF) {
			return 0 // let go unclaimed
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("sandbox", id)
	rep := &reporter{f: os.NewFile(ReportFD, "report"), log: log}
	defer rep.close()
	if err := errors.Join(claimErr, stErr); err != nil {
		log.Error("start", "err", err)
		rep.fail(err)
		return 1
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)

	plan, err := readPlan(in)
	if err != nil {
		log.Error("read the plan", "err", err)
		rep.fail(err)
		return 1
	}
	mon := &monitor{st: st, id: id, plan: plan, hooks: h, log: log}
	// The guest's resolver starts with the VMM, and is up before the
	// start is reported.
	dnsReady, stopDNS := mon.startDNS()
	p, err := mon.spawn(term)
	if err != nil {
		stopDNS()
		log.Error("start failed", "err", err)
		mon.finish(nil, err)
		rep.fail(err)
		return 1
	}
	rep.send(Report{PID: p.PID(), StartTime: p.StartTime()})
	log.Info("VMM spawned", "pid", p.PID())

	if err := mon.awaitVerdict(p, term, rep); err != nil {
		_ = p.End(context.Background(), 0, true)
		stopDNS()
		if errors.Is(err, errAbandoned) {
			// Not this sandbox's monitor: the Start that spawned it died
			// before recording it. Nothing is recorded.
			log.Error("start abandoned", "err", err)
			mon.closeConsole()
			mon.removeSockets()
			if cerr := mon.cleanJail(nil); cerr != nil {
				log.Error("clean the jail", "err", cerr)
			}
			rep.fail(err)
			return 1
		}
		log.Error("start failed", "err", err)
		mon.finish(nil, err)
		rep.fail(err)
		return 1
	}
	dnsReady()
	rep.send(Report{Running: true})
	rep.close()
	log.Info("VMM running", "pid", p.PID())

	for {
		select {
		case <-p.Done():
			stopDNS()
			status := p.Exit()
			log.Info("VMM exited", "status", status.String())
			mon.finish(&status, nil)
			return 0
		case sig := <-term:
			log.Info("stopping the VMM", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), stopGrace+5*time.Second)
			if err := p.End(ctx, stopGrace, false); err != nil {
				log.Error("stop", "err", err)
			}
			cancel()
		}
	}
}

// reporter writes a monitor's reports.
type reporter struct {
	f   *os.File // nil once closed
	log *slog.Logger
}

func (r *reporter) send(rep Report) {
	if r.f == nil {
		return
	}
	b, _ := json.Marshal(rep)
	if _, err := r.f.Write(append(b, '\n')); err != nil {
		r.log.Info("nobody reads the reports", "err", err)
	}
}

// fail reports err, and closes the reports.
func (r *reporter) fail(err error) {
	r.send(Report{Error: err.Error(), Kind: KindCode(err)})
	r.close()
}

func (r *reporter) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// awaitClaim waits for a spare monitor's claim on in and takes up the
// sandbox it names (see Claim), whose ID it returns. The end of in before
// a claim is io.EOF: its starter let it go. stErr is the error of opening
// the state root st: a claim that cannot be served is still read, so
// that its error is reported to the claimer.
func awaitClaim(in *bufio.Reader, st *store.Store, stErr error) (string, error) {
	line, err := in.ReadSlice('\n')
	if len(line) == 0 && errors.Is(err, io.EOF) {
		return "", io.EOF
	}
	if err != nil {
		return "", fmt.Errorf("read the spare monitor's claim: %w", err)
	}
	var c Claim
	if err := json.Unmarshal(line, &c); err != nil {
		return "", fmt.Errorf("read the spare monitor's claim: %w: %w", errdefs.ErrCorrupt, err)
	}
	if stErr != nil {
		return c.ID, stErr
	}
	dir, err := st.Dir(c.ID)
	if err != nil {
		return c.ID, err
	}
	if c.Log == "" || filepath.Base(c.Log) != c.Log {
		return c.ID, fmt.Errorf("%w: the claim's log %q is not a file name", errdefs.ErrInvalid, c.Log)
	}
	logf, err := store.OpenInDir("sandbox directory", dir, c.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return c.ID, fmt.Errorf("open the monitor log: %w", err)
	}
	defer logf.Close()
	for _, fd := range []int{1, 2} {
		if err := syscall.Dup3(int(logf.Fd()), fd, 0); err != nil {
			return c.ID, fmt.Errorf("open the monitor log: %w", err)
		}
	}
	if err := os.Chdir(dir); err != nil {
		return c.ID, err
	}
	// Named in ps as a monitor started for it is; not needed to find it
	// (its working directory and argv[0] are what a lost record's
	// processes are found by).
	if err := kunix.SetArg(1, c.ID); err != nil {
		fmt.Fprintf(os.Stderr, "kindling-monitor: name the sandbox in the command line: %v\n", err)
	}
	return c.ID, nil
}

// readPlan reads and checks the plan on r.
func readPlan(r io.Reader) (*Plan, error) {
	b, err := store.ReadLimited(r, "monitor plan", maxPlanSize)
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
	if p.RunDir == "" || p.Console == "" {
		return nil, fmt.Errorf("read the monitor plan: %w: it names no run directory or console log", errdefs.ErrCorrupt)
	}
	if p.Command.Path == "" {
		return nil, fmt.Errorf("read the monitor plan: %w: it names no VMM command", errdefs.ErrCorrupt)
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
	// console is the bounded console log; nil until spawn opens it.
	console *ConsoleLog
}

// errAbandoned: the record does not name this process as the sandbox's
// starting monitor.
var errAbandoned = errors.New("the record does not name this monitor: its start was abandoned")

// errStarterGone: the verdict pipe ended without a verdict.
var errStarterGone = errors.New("the start was abandoned: its starter exited before the VMM was configured")

// spawn opens the console log and starts the VMM. A signal on term aborts
// it.
func (mon *monitor) spawn(term <-chan os.Signal) (*vmmproc.Process, error) {
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
	if filepath.Clean(mon.plan.RunDir) != dir {
		return nil, fmt.Errorf("%w: the plan's run directory %s is not the sandbox's, %s", errdefs.ErrInvalid, mon.plan.RunDir, dir)
	}
	console, err := OpenConsoleLog(dir, mon.plan.Console, 0, mon.log)
	if err != nil {
		return nil, err
	}
	mon.console = console
	return vmmproc.Start(ctx, mon.plan.Command, console)
}

// awaitVerdict waits for the starter's verdict on VerdictFD, reporting the
// VMM's exit if it comes first, and on a commit records the VMM as
// running. An abort, the pipe's end, SIGTERM or StartTimeout give an
// error: the caller kills the VMM.
func (mon *monitor) awaitVerdict(p *vmmproc.Process, term <-chan os.Signal, rep *reporter) error {
	verdicts := make(chan Verdict, 1)
	readErr := make(chan error, 1)
	go func() {
		f := os.NewFile(VerdictFD, "verdict")
		defer f.Close()
		var v Verdict
		err := json.NewDecoder(f).Decode(&v)
		if err != nil {
			readErr <- err
			return
		}
		verdicts <- v
	}()
	timeout := time.NewTimer(StartTimeout)
	defer timeout.Stop()
	exited := p.Done()
	for {
		select {
		case <-exited:
			e := p.Exit()
			rep.send(Report{Exit: &e, Stderr: p.Stderr()})
			exited = nil
		case v := <-verdicts:
			if !v.Commit {
				msg := v.Error
				if msg == "" {
					msg = "the starter aborted the start"
				}
				return Report{Error: msg, Kind: v.Kind}.Err()
			}
			return mon.recordRunning(v.Machine)
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				err = errStarterGone
			} else {
				err = fmt.Errorf("read the starter's verdict: %w", err)
			}
			// The starter died; a record that does not name this monitor
			// means it died before recording it.
			if aerr := mon.checkStarting(); aerr != nil {
				return aerr
			}
			return err
		case sig := <-term:
			return fmt.Errorf("the start was aborted (%s)", sig)
		case <-timeout.C:
			return fmt.Errorf("no verdict from the starter within %v", StartTimeout)
		}
	}
}

// checkStarting returns errAbandoned unless the record names this
// process as the sandbox's starting monitor.
func (mon *monitor) checkStarting() error {
	l, err := mon.st.Lock(context.Background(), mon.id)
	if err != nil {
		return err
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		return err
	}
	return rec.starting()
}

// starting returns errAbandoned unless rec names this process as the
// sandbox's starting monitor.
func (rec record) starting() error {
	var status string
	var ref ProcRef
	if err := errors.Join(rec.get("status", &status), rec.get("monitor", &ref)); err != nil {
		return err
	}
	if status != StatusStarting || ref.PID != os.Getpid() {
		return errAbandoned
	}
	return nil
}

// recordRunning records the VMM as running, with machine (the driver's
// state of it) as the record's machine.
func (mon *monitor) recordRunning(machine json.RawMessage) error {
	if len(machine) == 0 {
		return fmt.Errorf("%w: the starter committed the start without the VMM's state", errdefs.ErrCorrupt)
	}
	l, err := mon.st.Lock(context.Background(), mon.id)
	if err != nil {
		return fmt.Errorf("record the running VMM: %w", err)
	}
	defer l.Unlock()
	var rec record
	err = l.Load(&rec)
	if err == nil {
		// The Start that spawned this monitor holds the lock until it has
		// recorded it; a record that does not name it means that Start
		// died first, and a VMM nobody can find must not run.
		err = rec.starting()
	}
	if err == nil {
		rec["machine"] = machine
		err = errors.Join(rec.set("status", StatusRunning), rec.set("started_at", time.Now().UTC()))
	}
	if err == nil {
		err = l.Save(rec)
	}
	if err != nil && !errors.Is(err, errAbandoned) {
		return fmt.Errorf("record the running VMM: %w", err)
	}
	return err
}

func (mon *monitor) closeConsole() {
	if mon.console != nil {
		mon.console.Close()
	}
}

// removeSockets removes the plan's sockets from the sandbox's directory.
func (mon *monitor) removeSockets() {
	for _, name := range mon.plan.Sockets {
		if filepath.Base(name) == name {
			os.Remove(filepath.Join(mon.plan.RunDir, name))
		}
	}
}

// finish records how the VMM ended (status), or why it never started
// (startErr), releases the sandbox's host resources, and removes the
// sandbox if it was created to be removed.
func (mon *monitor) finish(status *vmmproc.Exit, startErr error) {
	mon.closeConsole()
	if mon.record(status, startErr) {
		mon.releaseNetwork()
	}
}

// record records the exit, deletes the taps and sockets, and removes the
// sandbox if asked and nothing else is held; it reports whether the
// sandbox still holds CNI networks to tear down.
func (mon *monitor) record(status *vmmproc.Exit, startErr error) (netHeld bool) {
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
		if err := vmmproc.DeleteTap(t.Name, t.NetNS); err != nil && !errors.Is(err, fs.ErrNotExist) {
			mon.log.Error("release taps", "err", err)
		}
	}
	mon.removeSockets()
	// The jail goes at every end; the VMM, its only user, has exited.
	var machine struct {
		Pool []poolDrive `json:"pool"`
	}
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
		mon.removeJailParents()
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
