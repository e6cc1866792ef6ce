package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/vmm"
)

// startTimeout bounds a monitor's start of the VMM when the caller gave no
// deadline of its own (the caller can still abort earlier with SIGTERM).
const startTimeout = 60 * time.Second

// MonitorMain runs the sandbox monitor and exits, when this process was
// started as one by a Runtime; otherwise it returns at once. Programs that
// embed the runtime call it first thing in main.
func MonitorMain() {
	root, id := os.Getenv(envMonitorRoot), os.Getenv(envMonitorID)
	if root == "" || id == "" {
		return
	}
	os.Unsetenv(envMonitorRoot)
	os.Unsetenv(envMonitorID)
	// The executables stay in the environment until start compares them
	// with the record (monitorExecutables), then go too.
	// The report pipe must not leak into the VMM: the starter reads until
	// every copy of its write end is closed.
	syscall.CloseOnExec(readyFD)
	os.Exit(runMonitor(root, id))
}

// runMonitor is the monitor: it starts the sandbox's VMM as its child,
// records it, waits for it to exit, records how, and releases the sandbox's
// host resources. Its log (stderr) is the sandbox's monitor.log.
func runMonitor(root, id string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("sandbox", id)
	report := os.NewFile(readyFD, "report")
	reported := false
	say := func(err error) {
		if reported {
			return
		}
		reported = true
		var rep startReport
		if err != nil {
			rep.Error, rep.Kind = err.Error(), kindCode(err)
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

	st, err := store.Open(root)
	if err != nil {
		say(err)
		return 1
	}
	mon := &monitor{st: st, id: id, log: log}
	// The guest's resolver starts with the VMM.
	stopDNS := mon.startDNS()
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

// monitor holds what the monitor process works with.
type monitor struct {
	st  *store.Store
	id  string
	log *slog.Logger
	// console is the bounded console log; nil until start opens it.
	console *consoleLog
}

// errAbandoned: the record does not name this process as the sandbox's
// starting monitor.
var errAbandoned = errors.New("the record does not name this monitor: its start was abandoned")

// start boots the VMM and records it as running. A SIGTERM on term aborts
// the start.
func (mon *monitor) start(term <-chan os.Signal) (*vmm.Machine, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	go func() {
		select {
		case <-term:
			cancel()
		case <-ctx.Done():
		}
	}()

	var rec record
	if err := mon.st.Load(mon.id, &rec); err != nil {
		return nil, err
	}
	err := monitorExecutables(&rec)
	os.Unsetenv(envMonitorFirecracker)
	os.Unsetenv(envMonitorJailer)
	if err != nil {
		return nil, err
	}
	dir, err := mon.st.Dir(mon.id)
	if err != nil {
		return nil, err
	}
	if err := prepareRunFiles(dir); err != nil {
		return nil, err
	}
	console, err := openConsoleLog(dir, consoleName, 0, mon.log)
	if err != nil {
		return nil, err
	}
	mon.console = console
	if err := checkJailUID(&rec); err != nil {
		return nil, err
	}
	cfg := vmmConfig(&rec, dir)
	// Firecracker's log is the sandbox's, not the driver's: made here, it
	// outlives a failed start (the driver removes only a log it created),
	// so 'kindling logs --vmm' can tell why, until the sandbox is removed.
	if err := touch(cfg.LogPath); err != nil {
		return nil, err
	}
	cfg.Console = console
	opts := []vmm.Option{vmm.WithLogger(mon.log)}
	if rec.Spec.HotplugWritable {
		opts = append(opts, vmm.WithPlaceholderAccess(vmm.PlaceholdersReadWrite))
	}

	var m *vmm.Machine
	if rec.RestoreFrom != "" {
		m, err = restoreMachine(ctx, cfg, &rec, opts)
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
	if err == nil {
		defer l.Unlock()
		err = l.Load(&rec)
	}
	if err == nil && (rec.Status != Starting || rec.Monitor == nil || rec.Monitor.PID != os.Getpid()) {
		// The Start that spawned this monitor holds the lock until it has
		// recorded it; a record that does not name it means that Start
		// died first, and a VMM nobody can find must not run.
		err = errAbandoned
	}
	if err == nil {
		state := m.State()
		rec.Status, rec.Machine, rec.StartedAt = Running, &state, time.Now().UTC()
		err = l.Save(&rec)
	}
	if err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer stopCancel()
		return nil, errors.Join(fmt.Errorf("record the running VMM: %w", err), m.Kill(stopCtx))
	}
	return m, nil
}

// touch creates the file path, empty, unless it exists.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}

// finish records how the VMM ended (status), or why it never started
// (startErr), releases the sandbox's host resources, and removes the
// sandbox if it was created to be removed.
func (mon *monitor) finish(status *vmm.ExitStatus, startErr error) {
	if mon.console != nil {
		mon.console.Close()
	}
	ctx := context.Background()
	l, err := mon.st.Lock(ctx, mon.id)
	if err != nil {
		mon.log.Error("record the exit", "err", err)
		return
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		mon.log.Error("record the exit", "err", err)
		return
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
	// rec.Monitor stays: Wait and gc wait on it until this process is gone.
	rec.Status, rec.Exit = Exited, exit
	if err := releaseTaps(ctx, &rec); err != nil {
		mon.log.Error("release taps", "err", err)
	}
	if err := releaseNetwork(ctx, &rec); err != nil {
		// The record keeps the network: stop, rm or gc try again.
		mon.log.Error("tear down the network", "err", err)
	}
	removeSockets(l.Dir())
	if err := cleanJail(l.Dir(), &rec); err != nil {
		mon.log.Error("clean the jail", "err", err)
	}
	if rec.AutoRemove && !rec.NetActive {
		if err := releaseJailID(mon.st.Root(), mon.id, rec.Jail); err != nil {
			mon.log.Error("release the jail uid", "err", err)
		}
		removeEmptyJailParents(mon.st.Root(), mon.id)
		if err := l.Remove(); err != nil {
			mon.log.Error("auto-remove", "err", err)
		}
		return
	}
	if err := l.Save(&rec); err != nil {
		mon.log.Error("record the exit", "err", err)
	}
}
