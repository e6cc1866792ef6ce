package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/fcapi"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// DefaultStopGrace is how long Stop waits for the guest to react to
// Ctrl-Alt-Del before it sends SIGTERM. It is short on purpose: a guest that
// ignores Ctrl-Alt-Del (most minimal guests do) costs only this much.
const DefaultStopGrace = 300 * time.Millisecond

// defaultStopTimeout bounds Stop when its context has no deadline.
const defaultStopTimeout = 5 * time.Second

// Option sets a cross-cutting knob of a Machine.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	tp          trace.TracerProvider
	stopGrace   time.Duration
	placeholder PlaceholderAccess
	// spawner starts the VMM process in place of the Machine; nil: the
	// Machine spawns it as its own child.
	spawner Spawner
}

// WithLogger makes the Machine log its life cycle at debug level to l. It
// returns errors rather than logging them. The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithTracerProvider makes the Machine record an OpenTelemetry span around
// each whole operation (start, stop, pause, resume, snapshot, restore,
// attach and detach drive). The default records nothing.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) {
		if tp != nil {
			o.tp = tp
		}
	}
}

// WithStopGrace sets how long Stop waits after Ctrl-Alt-Del before it
// sends SIGTERM (DefaultStopGrace otherwise). Zero skips Ctrl-Alt-Del.
func WithStopGrace(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.stopGrace = d
		}
	}
}

// PlaceholderAccess says whether the placeholder pool's drives are
// attached read-only or read-write.
type PlaceholderAccess int

const (
	// PlaceholdersReadOnly (the default) makes every placeholder read-only:
	// AttachDrive then accepts only read-only drives.
	PlaceholdersReadOnly PlaceholderAccess = iota
	// PlaceholdersReadWrite makes every placeholder writable: AttachDrive
	// then accepts only writable drives.
	PlaceholdersReadWrite
)

// WithPlaceholderAccess sets the access mode of the placeholder pool.
// Firecracker fixes a drive's read-only flag when it is first attached, so
// the mode of a slot never changes afterwards.
func WithPlaceholderAccess(a PlaceholderAccess) Option {
	return func(o *options) { o.placeholder = a }
}

func buildOptions(opts []Option) options {
	o := options{
		logger:    slog.New(slog.DiscardHandler),
		tp:        noop.NewTracerProvider(),
		stopGrace: DefaultStopGrace,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// phase is where a Machine is in its life.
type phase int

const (
	phaseCreated  phase = iota // New returned it
	phaseStarting              // Start is running
	phaseRunning               // the microVM runs
	phasePaused                // the microVM is paused
	phaseExited                // the VMM has exited or Start failed
)

func (p phase) String() string {
	switch p {
	case phaseCreated:
		return "created"
	case phaseStarting:
		return "starting"
	case phaseRunning:
		return "running"
	case phasePaused:
		return "paused"
	default:
		return "exited"
	}
}

// Machine is one Firecracker VMM and its microVM. Create it with New and
// Start it, or get one from Restore or Attach. Its methods are safe for
// concurrent use. The VMM's lifetime belongs to the Machine, not to the
// context given to Start.
type Machine struct {
	cfg    Config
	opts   options
	logger *slog.Logger
	tracer trace.Tracer

	// stopMu serialises Stop and Kill, so that one escalation runs at a time.
	stopMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// phase is the last known phase; phaseExited is also implied once
	// proc.done is closed (see phaseLocked).
	phase phase
	// proc is the Firecracker process, nil before Start spawns it.
	proc *process
	// client talks to proc's API socket, nil until it answers.
	client *fcapi.Client
	// version is the running release, zero until probed.
	version fcapi.Version
	// pool holds the placeholder slots.
	pool []Slot
	// jail is the chroot the jailer built, nil without the jailer.
	jail *jailState
	// api is cfg with the paths Firecracker sees (in-jail ones for a jailed
	// VMM); set by Start before the boot steps.
	api Config
	// vsockName is the vsock socket's path as Firecracker holds it when
	// that is relative to its working directory, the run directory (see
	// runDirPath); "" when Firecracker holds an absolute path.
	vsockName string
	// released is set by Release: the Machine no longer watches the VMM.
	released bool
	// madeFiles are files Start created in RunDir (placeholders), removed
	// if the start fails.
	madeFiles []string
}

// New checks cfg (after applying defaults) and returns a Machine ready to
// Start. Nothing is spawned or created on disk; an invalid cfg gives an
// error matching ErrInvalidConfig.
func New(cfg Config, opts ...Option) (*Machine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newMachine(cfg, buildOptions(opts)), nil
}

func newMachine(cfg Config, o options) *Machine {
	return &Machine{
		cfg:    cfg,
		opts:   o,
		logger: o.logger.With("vmm", cfg.ID),
		tracer: o.tp.Tracer("github.com/kindling-vm/kindling/vmm"),
	}
}

// ID returns the VMM's ID (Firecracker's --id).
func (m *Machine) ID() string { return m.cfg.ID }

// Config returns the configuration the Machine was built with, defaults
// applied.
func (m *Machine) Config() Config { return m.cfg }

// SocketPath returns the API socket's path on the host.
func (m *Machine) SocketPath() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.socketPathLocked()
}

func (m *Machine) socketPathLocked() string {
	if m.jail != nil {
		return m.jail.layout.SocketPathHost
	}
	return m.cfg.SocketPath
}

// vsockPathLocked is the host path of the vsock socket, "" without one.
func (m *Machine) vsockPathLocked() string {
	switch {
	case m.cfg.Vsock == nil:
		return ""
	case m.jail != nil:
		return m.jail.layout.VsockPathHost
	default:
		return m.cfg.Vsock.Path
	}
}

// runDirPath returns the path under which a VMM configured by cfg is given
// the file path (api), and name, that path relative to the run directory
// when it is one. Without a jail, a file in the run directory is given by
// its relative name: Firecracker resolves it against its working
// directory, the run directory, so that what it records in a snapshot (the
// vsock socket's path above all) names a file of whichever run directory
// loads the snapshot. A path outside the run directory, or a jailed VMM's
// (in-jail paths are the same in every jail already), is given as it is,
// with name "".
func runDirPath(cfg *Config, path string) (api, name string) {
	if cfg.Jailer != nil || cfg.RunDir == "" || path == "" {
		return path, ""
	}
	dir, err := filepath.Abs(cfg.RunDir)
	if err != nil {
		return path, ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path, ""
	}
	rel, err := filepath.Rel(dir, abs)
	if err != nil || !filepath.IsLocal(rel) {
		return path, ""
	}
	return rel, rel
}

// apiConfig returns the configuration with the paths Firecracker sees.
func (m *Machine) apiConfig() *Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.api
	return &c
}

// LogPath returns the path of Firecracker's own log file on the host.
func (m *Machine) LogPath() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.jail != nil {
		return m.jail.layout.LogPathHost
	}
	return m.cfg.LogPath
}

// PID returns the Firecracker process's PID and its start time (in clock
// ticks since boot), or zeros before Start has spawned it.
func (m *Machine) PID() (pid int, startTime uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0, 0
	}
	return m.proc.pid, m.proc.startTime
}

// Done returns a channel closed once the VMM has exited. Before Start has
// spawned a process the channel stays open.
func (m *Machine) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		// A nil channel blocks forever; hand out one that Start cannot close
		// rather than nil so the caller can still select on it.
		return make(chan struct{})
	}
	return m.proc.done
}

// Wait blocks until the VMM exits and returns how it ended, or returns
// ctx's error. It errors with ErrNotRunning before Start.
func (m *Machine) Wait(ctx context.Context) (ExitStatus, error) {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return ExitStatus{}, &StateError{Op: "wait", State: phaseCreated.String()}
	}
	select {
	case <-p.done:
		return p.exit, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// phaseLocked returns the current phase; m.mu is held.
func (m *Machine) phaseLocked() phase {
	if m.proc != nil && m.proc.exited() {
		return phaseExited
	}
	return m.phase
}

// live returns the client of a VMM in one of the wanted phases, or a
// *StateError naming op.
func (m *Machine) live(op string, want ...phase) (*fcapi.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ph := m.phaseLocked()
	for _, w := range want {
		if ph == w {
			return m.client, nil
		}
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = w.String()
	}
	return nil, &StateError{Op: op, State: ph.String(), Want: strings.Join(names, " or ")}
}

// Start spawns Firecracker, waits for its API, configures the microVM and
// starts it. ctx bounds start-up only: once Start has returned nil, the VMM
// runs until Stop, Kill or the guest ends it. If Start fails or ctx ends,
// everything Start made is undone — the process is killed and reaped, the
// API socket and the files it created are removed — and the Machine cannot
// be started again.
func (m *Machine) Start(ctx context.Context) (err error) {
	ctx, span := m.startSpan(ctx, "vmm.Start")
	defer func() { endSpan(span, err) }()

	m.mu.Lock()
	if ph := m.phaseLocked(); ph != phaseCreated {
		m.mu.Unlock()
		return &StateError{Op: "start", State: ph.String(), Want: "created"}
	}
	m.phase = phaseStarting
	m.mu.Unlock()

	return m.bringUp(ctx, m.bootSteps, phaseRunning)
}

// bringUp launches the VMM, runs steps, waits for the console marker and
// moves the Machine to phase final; on any failure it undoes everything and
// leaves the Machine exited.
func (m *Machine) bringUp(ctx context.Context, steps func() []step, final phase) (err error) {
	var undo cleanupStack
	defer func() {
		if err == nil {
			return
		}
		m.mu.Lock()
		made := m.madeFiles
		m.madeFiles = nil
		m.mu.Unlock()
		for _, f := range made {
			undo.push("remove "+f, func(context.Context) error { return removeIfExists(f) })
		}
		if cerr := undo.run(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up after failed start: %w", cerr))
		}
		m.mu.Lock()
		m.phase = phaseExited
		m.mu.Unlock()
	}()

	began := time.Now()
	watch, err := m.launch(ctx, &undo)
	if err != nil {
		return err
	}
	if err := m.runSteps(ctx, steps()); err != nil {
		return err
	}
	if watch != nil {
		if err := m.waitConsole(ctx, watch); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.phase = final
	m.mu.Unlock()
	m.logger.Debug("VMM up", "phase", final.String(), "took", time.Since(began))
	return nil
}

// launch does the first half of a start: it prepares the run directory,
// spawns Firecracker (directly or through the jailer) and waits until its
// API answers. Every step pushes its undo onto undo.
func (m *Machine) launch(ctx context.Context, undo *cleanupStack) (*consoleWatch, error) {
	cfg := &m.cfg
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	var vsockPath string
	if cfg.Vsock != nil {
		vsockPath = cfg.Vsock.Path
	}
	if cfg.Jailer == nil {
		if err := removeStaleSocket(cfg.SocketPath); err != nil {
			return nil, err
		}
		if vsockPath != "" {
			if err := removeStaleSocket(vsockPath); err != nil {
				return nil, fmt.Errorf("vsock: %w", err)
			}
		}
	}

	var console io.Writer
	closeConsole := func() {}
	var err error
	if m.opts.spawner == nil {
		if console, closeConsole, err = openConsole(cfg); err != nil {
			return nil, err
		}
	}
	spawned := false
	defer func() {
		if !spawned {
			closeConsole()
		}
	}()
	var watch *consoleWatch
	if cfg.WaitConsole != "" {
		watch = newConsoleWatch(cfg.WaitConsole)
	}

	var spec spawnSpec
	if cfg.Jailer != nil {
		spec, err = m.prepareJail(undo)
	} else {
		spec, err = m.prepareDirect(undo)
	}
	if err != nil {
		return nil, err
	}
	spec.stdout = console
	spec.watch = watch
	spec.env = cfg.Env
	spec.closeStdout = closeConsole

	spawned = true // spawn owns the console from here, even when it fails
	var p *process
	if m.opts.spawner != nil {
		// The console is written by the spawner's process to ConsolePath:
		// look for the marker in what is appended to it from now on.
		spec.env = cfg.Env
		offset := fileSize(cfg.ConsolePath)
		if p, err = m.spawnElsewhere(ctx, spec); err != nil {
			return nil, err
		}
		if watch != nil {
			if cfg.ConsolePath == "" {
				watch.close()
			} else {
				stop := make(chan struct{})
				undo.push("stop following the console", func(context.Context) error { close(stop); return nil })
				go followConsole(cfg.ConsolePath, offset, watch, stop, p.done)
			}
		}
	} else if p, err = spawn(spec); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.proc = p
	socketPath := m.socketPathLocked()
	hostVsock := m.vsockPathLocked()
	m.mu.Unlock()
	undo.push("kill firecracker", func(ctx context.Context) error {
		m.mu.Lock()
		p := m.proc
		m.mu.Unlock()
		return m.killProcess(ctx, p)
	})
	if cfg.Jailer != nil && cfg.Jailer.NewPIDNS && m.opts.spawner == nil {
		q, err := m.adoptJailed(ctx, p)
		if err != nil {
			return nil, err
		}
		m.mu.Lock()
		m.proc = q
		m.mu.Unlock()
		p = q
	}
	undo.push("remove api socket", func(context.Context) error { return removeIfExists(socketPath) })
	if hostVsock != "" {
		undo.push("remove vsock socket", func(context.Context) error { return removeIfExists(hostVsock) })
	}

	if err := waitForAPI(ctx, socketPath, p); err != nil {
		return nil, err
	}
	client, err := fcapi.New(socketPath, fcapi.WithLogger(m.logger))
	if err != nil {
		return nil, err
	}
	undo.push("close api client", func(context.Context) error { return client.Close() })
	ver, err := client.Version(ctx)
	if err != nil {
		return nil, m.explain(p, fmt.Errorf("probe version: %w", err), false)
	}
	m.mu.Lock()
	m.client, m.version = client, ver
	m.mu.Unlock()
	m.logger.Debug("firecracker API ready", "pid", p.pid, "version", ver.String())
	return watch, nil
}

// prepareDirect builds the command line of a directly spawned Firecracker
// and pre-creates its log file (Firecracker opens it but will not create it).
func (m *Machine) prepareDirect(undo *cleanupStack) (spawnSpec, error) {
	cfg := &m.cfg
	created, err := createIfMissing(cfg.LogPath)
	if err != nil {
		return spawnSpec{}, fmt.Errorf("create log file: %w", err)
	}
	if created {
		undo.push("remove log file", func(context.Context) error { return removeIfExists(cfg.LogPath) })
	}
	m.mu.Lock()
	m.api = m.cfg
	m.mu.Unlock()
	return spawnSpec{
		path:  cfg.Firecracker,
		args:  firecrackerArgs(cfg.ID, cfg.SocketPath, cfg.LogPath, cfg.LogLevel),
		dir:   cfg.RunDir,
		netns: cfg.NetNS,
	}, nil
}

// firecrackerArgs is Firecracker's own command line.
func firecrackerArgs(id, socket, logPath, level string) []string {
	args := []string{"--api-sock", socket, "--id", id}
	if logPath != "" {
		args = append(args, "--log-path", logPath)
	}
	if level != "" {
		args = append(args, "--level", level)
	}
	return args
}

// waitForAPI retries connecting to the API socket until it accepts, the
// process exits (an error with its stderr) or ctx ends. The retry starts
// tight and backs off to a millisecond; Firecracker is normally listening
// within a millisecond of its spawn.
func waitForAPI(ctx context.Context, socketPath string, p *process) error {
	delay := 50 * time.Microsecond
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var d net.Dialer
	for {
		select {
		case <-p.done:
			return apiNeverReady(p)
		default:
		}
		conn, err := d.DialContext(ctx, "unix", socketPath)
		if err == nil {
			conn.Close()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for firecracker api at %s: %w", socketPath, ctx.Err())
		}
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		select {
		case <-p.done:
			return apiNeverReady(p)
		case <-ctx.Done():
			return fmt.Errorf("wait for firecracker api at %s: %w", socketPath, ctx.Err())
		case <-timer.C:
		}
		if delay < time.Millisecond {
			delay *= 2
		}
	}
}

func apiNeverReady(p *process) error {
	msg := "firecracker " + p.exit.String() + " before its API was ready"
	if tail := p.stderrTail(); tail != "" {
		msg += ": " + tail
	}
	return &exitError{status: p.exit, msg: msg}
}

// explain adds the process's fate to err when the VMM has died: a request
// that failed because Firecracker exited says so, with its stderr. A broken
// connection waits a moment for the exit to be seen; so does any failure
// when fatal is set (Firecracker exits after some failures, such as a failed
// snapshot load).
func (m *Machine) explain(p *process, err error, fatal bool) error {
	wait := time.Duration(0)
	if errors.Is(err, fcapi.ErrUnavailable) {
		wait = 100 * time.Millisecond
	}
	if fatal {
		wait = time.Second
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-p.died():
		case <-t.C:
		}
	}
	select {
	case <-p.died():
	default:
		return err
	}
	// Dead. Its status comes from whoever reaps it: the monitor, for a
	// VMM it spawned, reports it a moment later.
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		return fmt.Errorf("%w (firecracker exited)", err)
	}
	return fmt.Errorf("%w (%w)", err, p.exitError())
}

// removeStaleSocket removes a socket file nobody listens on any more (left
// by a VMM that died) and refuses one a live process answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("socket path %s: exists and is not a socket: remove it or choose another path", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("socket %s: a live process answers on it (another VMM?): stop it or choose another path", path)
	}
	if !kunix.IsConnRefused(err) {
		return fmt.Errorf("check socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// createIfMissing creates an empty file at path (0600) unless one exists,
// and reports whether it did.
func createIfMissing(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, f.Close()
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// waitConsole waits until the console shows the marker.
func (m *Machine) waitConsole(ctx context.Context, w *consoleWatch) error {
	select {
	case <-w.found:
		return nil
	case <-w.eof:
		// The stream ended; the marker may still have been in its last chunk.
		select {
		case <-w.found:
			return nil
		default:
		}
		return fmt.Errorf("wait for console text %q: console closed before it appeared", m.cfg.WaitConsole)
	case <-ctx.Done():
		return fmt.Errorf("wait for console text %q: %w", m.cfg.WaitConsole, ctx.Err())
	}
}

// cleanupStack undoes, in reverse order, what a half-built operation made.
type cleanupStack struct {
	items []cleanupItem
}

type cleanupItem struct {
	what string
	fn   func(context.Context) error
}

func (s *cleanupStack) push(what string, fn func(context.Context) error) {
	s.items = append(s.items, cleanupItem{what, fn})
}

// run calls every undo, newest first, and joins their errors. ctx should not
// be cancelled (use context.WithoutCancel): undoing must finish.
func (s *cleanupStack) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, defaultStopTimeout)
	defer cancel()
	var errs []error
	for i := len(s.items) - 1; i >= 0; i-- {
		if err := s.items[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.items[i].what, err))
		}
	}
	s.items = nil
	return errors.Join(errs...)
}
