package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// Sentinel errors. Every error from the runtime wraps one of kindling's
// kinds (internal/errdefs), re-exported here as the same values that
// packages vmm, fcapi and template use, so callers test them with errors.Is
// whichever layer failed. The messages state facts; a program that shows
// them to people adds its own hints (the kindling CLI does).
var (
	// ErrNotFound: no sandbox (or template, slot, snapshot) has that name.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: a sandbox (or template) with that name exists already.
	ErrExists = errdefs.ErrExists
	// ErrNotSupported: the Firecracker release, the platform or this
	// runtime cannot do what was asked; the message says what.
	ErrNotSupported = errdefs.ErrNotSupported
	// ErrInvalid: the caller's input is wrong; nothing was changed.
	// ErrInvalidSpec matches it.
	ErrInvalid = errdefs.ErrInvalid
	// ErrConflict: the sandbox is busy or in a state that does not allow
	// the operation. ErrInvalidState matches it.
	ErrConflict = errdefs.ErrConflict
	// ErrUnavailable: a process that must answer (the VMM's API) does not.
	ErrUnavailable = errdefs.ErrUnavailable
	// ErrCorrupt: stored data (a state file, a manifest) cannot be read.
	ErrCorrupt = errdefs.ErrCorrupt

	// ErrInvalidState: the sandbox is not in a state that allows the
	// operation. It is vmm.ErrInvalidState and matches ErrConflict.
	ErrInvalidState = vmm.ErrInvalidState
	// ErrInvalidSpec: the spec is wrong; the message says what and how to
	// fix it. It matches ErrInvalid.
	ErrInvalidSpec = errdefs.New(errdefs.ErrInvalid, "invalid sandbox spec")
	// ErrNoFirecracker: the spec names no firecracker executable, and
	// neither $KINDLING_FIRECRACKER nor PATH has one. It matches ErrInvalid.
	ErrNoFirecracker = errdefs.New(errdefs.ErrInvalid, "no firecracker executable found")
)

// EnvFirecracker names the environment variable that points at the
// firecracker executable when a spec gives none.
const EnvFirecracker = "KINDLING_FIRECRACKER"

// Runtime manages the sandboxes under one state root. Its methods are safe
// for concurrent use, also from several processes.
type Runtime struct {
	st  *store.Store
	log *slog.Logger
	tp  trace.TracerProvider
	// monitorExe is the executable started as each sandbox's monitor:
	// kindling-monitor when found next to fullMonitorExe, else that.
	monitorExe string
	// fullMonitorExe is the program that calls MonitorMain (this program,
	// or WithMonitorExecutable's); smallMonitor: monitorExe is not it.
	fullMonitorExe string
	smallMonitor   bool
	// agentTimeout bounds the waits for guest agents (WithAgentTimeout).
	agentTimeout time.Duration
	// guests caches what calls to guest agents need (guest.go).
	guests guestCache
	// records caches the state files List and Inspect read (cache.go).
	records recordCache
	// procs watches the processes records name (liveness.go).
	procs procWatch

	childMu sync.Mutex // guards children
	// children are the monitors this runtime started and has not reaped
	// yet, by PID.
	children map[int]*monitorProc
	// spares are the monitors started ahead of need (WithSpareMonitors).
	spares spareMonitors

	trustMu sync.Mutex // guards trusted
	// trusted are the executables (firecracker, jailer) this runtime's
	// caller named, by absolute path: a record's executable is started
	// only if it is one of them or the one configured by default (see
	// checkExecutables). A path read from disk is never trusted as such.
	trusted map[string]bool
	// slotPool gives sandboxes with --net slot their slots (WithSlotPool).
	slotPool *network.Pool
}

// Option configures a Runtime.
type Option func(*Runtime)

// WithLogger sets the logger the runtime, and the VMM driver under it, log
// their work to at debug level (default: discard). Errors are returned,
// not logged.
func WithLogger(l *slog.Logger) Option {
	return func(r *Runtime) {
		if l != nil {
			r.log = l
		}
	}
}

// WithTracerProvider sets the OpenTelemetry tracer provider of the runtime's
// spans and of the VMM driver's under them (default: no-op).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(r *Runtime) {
		if tp != nil {
			r.tp = tp
		}
	}
}

// vmmOptions are the driver options of a VMM this runtime attaches to: its
// logger and tracer provider.
func (r *Runtime) vmmOptions() []vmm.Option {
	return []vmm.Option{vmm.WithLogger(r.log), vmm.WithTracerProvider(r.tp)}
}

// WithMonitorExecutable sets the program that is each sandbox's monitor
// (default: this program); it must call MonitorMain. When the small
// monitor, kindling-monitor (MonitorExecutableName), is in the same
// directory, that runs instead, and the program is run only to tear down
// a sandbox's CNI networks at its end.
func WithMonitorExecutable(path string) Option {
	return func(r *Runtime) { r.fullMonitorExe = path }
}

// Open opens the state root (creating it if needed). An empty root means
// store.DefaultRoot: $KINDLING_ROOT, else /run/kindling.
func Open(root string, opts ...Option) (*Runtime, error) {
	if root == "" {
		root = store.DefaultRoot()
	}
	st, err := store.Open(root)
	if err != nil {
		return nil, err
	}
	r := &Runtime{st: st, log: slog.New(slog.DiscardHandler), tp: noop.NewTracerProvider(), children: map[int]*monitorProc{}, trusted: map[string]bool{}, agentTimeout: DefaultAgentTimeout}
	for _, o := range opts {
		o(r)
	}
	if r.fullMonitorExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the monitor executable: %w", err)
		}
		r.fullMonitorExe = exe
	}
	r.monitorExe, r.smallMonitor = findMonitor(r.fullMonitorExe)
	return r, nil
}

// Root returns the state root's absolute path.
func (r *Runtime) Root() string { return r.st.Root() }

// File names inside a sandbox directory.
const (
	apiSocketName  = "fc.sock"
	vsockName      = "vsock.sock"
	consoleName    = "console.log"
	fcLogName      = "firecracker.log"
	monitorLogName = "monitor.log"
)

// Info describes a sandbox as the host shows it now.
type Info struct {
	// ID is the sandbox's ID: the name of its directory.
	ID string `json:"id"`
	// RecordID is set when the sandbox's state file names another ID than
	// its directory (the file was copied or edited): it is what the file
	// says, shown so that the mismatch is seen; ID is what counts.
	RecordID  string    `json:"record_id,omitempty"`
	Status    Status    `json:"status"`
	Spec      Spec      `json:"spec"`
	Kernel    string    `json:"kernel"`
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// PID is the VMM's process ID while it runs.
	PID int `json:"pid,omitempty"`
	// MonitorPID is the monitor's process ID while it runs.
	MonitorPID int `json:"monitor_pid,omitempty"`
	// Exit says how the VMM ended, once it has.
	Exit *Exit `json:"exit,omitempty"`
	// Dir is the sandbox's directory.
	Dir            string `json:"dir"`
	APISocket      string `json:"api_socket"`
	ConsoleLog     string `json:"console_log"`
	FirecrackerLog string `json:"firecracker_log"`
	VsockSocket    string `json:"vsock_socket,omitempty"`
	// Taps are the sandbox's tap devices.
	Taps []TapInfo `json:"taps,omitempty"`
	// Network is the sandbox's CNI or slot network while it is set up.
	Network *NetworkInfo `json:"network,omitempty"`
	// Slots are the drive hotplug slots and what they hold.
	Slots []vmm.Slot `json:"hotplug_slots,omitempty"`
	// FirecrackerVersion is the running release, once known.
	FirecrackerVersion string `json:"firecracker_version,omitempty"`
	// RestoredFrom is the snapshot or template directory the sandbox was
	// restored from, if it was.
	RestoredFrom string `json:"restored_from,omitempty"`
	// JailUID is the uid (and gid) a jailed sandbox's Firecracker runs as,
	// once it has started; Chroot is its jail on the host, holding the
	// API and vsock sockets (jail.go).
	JailUID int    `json:"jail_uid,omitempty"`
	Chroot  string `json:"chroot,omitempty"`
}

// TapInfo is a tap device of a sandbox.
type TapInfo struct {
	Name  string `json:"name"`
	NetNS string `json:"netns,omitempty"`
	MAC   string `json:"mac"`
	// Created is set when kindling created the tap for the sandbox.
	Created bool `json:"created"`
}

// CreateOptions are the options of Create that are not part of the spec.
type CreateOptions struct {
	// AutoRemove removes the sandbox once its VMM exits.
	AutoRemove bool `json:"auto_remove,omitempty"`
	// CopyRootfs, when set, gives the sandbox a root filesystem of its
	// own (see createWithRootfsCopy): Spec.Rootfs names the file to copy,
	// and CopyRootfs(ctx, src, dst) makes the copy dst in the sandbox's
	// directory, which Spec.Rootfs then names and which goes with the
	// sandbox. Local runtimes only.
	CopyRootfs func(ctx context.Context, src, dst string) error `json:"-"`
}

// Create checks spec and records a new sandbox in the Created state. Nothing
// is spawned. A bad spec gives an error matching ErrInvalidSpec (or the
// driver's ErrInvalidConfig) and leaves nothing behind.
func (r *Runtime) Create(ctx context.Context, spec Spec, opts CreateOptions) (_ Info, err error) {
	ctx, end := r.span(ctx, "sandbox.Create", spec.ID)
	defer end(&err)

	var copied []string
	if opts.CopyRootfs != nil && spec.Rootfs != nil {
		copied = []string{spec.Rootfs.Path}
	}
	rec, err := r.newRecord(spec, copied...)
	if err != nil {
		return Info{}, err
	}
	rec.AutoRemove = opts.AutoRemove
	if opts.CopyRootfs != nil {
		err = r.createWithRootfsCopy(ctx, rec, opts.CopyRootfs)
	} else {
		err = r.st.Create(ctx, rec.ID, rec)
	}
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return Info{}, fmt.Errorf("sandbox %q: %w", rec.ID, ErrExists)
		}
		return Info{}, fmt.Errorf("create sandbox %q: %w", rec.ID, err)
	}
	if rec.Spec.Agent {
		if err := r.createToken(ctx, rec.ID); err != nil {
			return Info{}, err
		}
	}
	r.log.Debug("recorded sandbox", "sandbox", rec.ID, "status", rec.Status)
	return r.info(ctx, rec), nil
}

// newRecord checks and completes spec and returns the sandbox's first
// record. The drive files copied are only read: the sandbox gets its own
// copies of them (rootfscopy.go), so they are checked as read-only.
func (r *Runtime) newRecord(spec Spec, copied ...string) (*record, error) {
	if spec.ID == "" {
		spec.ID = NewID()
	}
	if err := store.ValidateID(spec.ID); err != nil {
		return nil, specError(err)
	}
	for k, v := range spec.Labels {
		if err := ValidateLabel(k, v); err != nil {
			return nil, err
		}
	}
	if err := applyAgentDefaults(&spec); err != nil {
		return nil, err
	}
	fc, err := FindFirecracker(spec.Firecracker)
	if err != nil {
		return nil, err
	}
	spec.Firecracker = fc
	if err := resolveJailer(&spec); err != nil {
		return nil, err
	}
	for _, p := range []*string{&spec.Kernel, &spec.Initrd, &spec.Jailer} {
		if err := absPath(p); err != nil {
			return nil, specError(err)
		}
	}
	if err := checkDriveFiles(spec); err != nil {
		return nil, err
	}
	if spec.Rootfs != nil {
		if err := absPath(&spec.Rootfs.Path); err != nil {
			return nil, specError(err)
		}
	}
	for i := range spec.Drives {
		if err := absPath(&spec.Drives[i].Path); err != nil {
			return nil, specError(err)
		}
	}
	if spec.NetNS != "" {
		ns, err := netdev.ResolveNetNS(spec.NetNS)
		if err != nil {
			return nil, specError(err)
		}
		spec.NetNS = ns
	}
	spec.SplitNet()
	if err := checkNetwork(context.Background(), &spec); err != nil {
		return nil, err
	}
	if err := resolveMetadata(&spec); err != nil {
		return nil, specError(err)
	}
	if _, err := spec.devices(); err != nil {
		return nil, specError(err)
	}
	rec := &record{ID: spec.ID, Spec: spec, CreatedAt: time.Now().UTC(), Status: Created, Kernel: spec.Kernel}
	if rec.Kernel == "" {
		if rec.Kernel, err = r.demoKernel(spec.Demo); err != nil {
			return nil, err
		}
	} else if spec.Demo != "" {
		return nil, fmt.Errorf("%w: demo %q is only for the built-in demo guest: leave out the demo mode or the kernel", ErrInvalidSpec, spec.Demo)
	}
	if rec.Taps, err = tapsFor(r.st.Root(), spec); err != nil {
		return nil, specError(err)
	}
	dir, err := r.st.Dir(spec.ID)
	if err != nil {
		return nil, specError(err)
	}
	cfg := vmmConfig(rec, dir)
	markCopied(&cfg, copied)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r.trust(spec.Firecracker, spec.Jailer) // the caller named them, or they are its defaults
	return rec, nil
}

func specError(err error) error { return fmt.Errorf("%w: %w", ErrInvalidSpec, err) }

func absPath(p *string) error {
	if *p == "" {
		return nil
	}
	a, err := filepath.Abs(*p)
	if err != nil {
		return fmt.Errorf("path %q: %w", *p, err)
	}
	*p = a
	return nil
}

// FindFirecracker resolves the firecracker executable the caller
// configured: the one given, else $KINDLING_FIRECRACKER, else "firecracker"
// on PATH, else the installed one. The path is absolute. Records and
// manifests read from disk never take part: they only name a release that
// the executable found here is compared with.
func FindFirecracker(given string) (string, error) {
	if given == "" {
		given = os.Getenv(EnvFirecracker)
	}
	if given == "" {
		p, err := install.Find(install.Firecracker, "")
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrInvalidSpec, ErrNoFirecracker)
		}
		given = p
	}
	if err := absPath(&given); err != nil {
		return "", specError(err)
	}
	return given, nil
}

// Greetings of the built-in demo guest.
const (
	demoPowerOffMessage = "Hello from kindling! This tiny guest booted in a Firecracker microVM and will now power off."
	demoIdleMessage     = "Hello from kindling! This tiny guest booted in a Firecracker microVM and now idles; stop it with 'kindling stop'."
)

// demoKernel writes the built-in demo guest (mode: Demo*) into the state
// root once and returns its path.
func (r *Runtime) demoKernel(mode string) (string, error) {
	o := guest.Options{Message: demoPowerOffMessage, Mode: guest.PowerOff}
	switch mode {
	case "", DemoPowerOff:
		mode = DemoPowerOff
	case DemoIdle:
		o = guest.Options{Message: demoIdleMessage, Mode: guest.Halt}
	default:
		return "", fmt.Errorf("%w: demo %q: use %s or %s", ErrInvalidSpec, mode, DemoPowerOff, DemoIdle)
	}
	img, err := guest.Build(o)
	if err != nil {
		return "", fmt.Errorf("build the demo guest: %w", err)
	}
	dir := filepath.Join(r.st.Root(), ".kernels")
	path := filepath.Join(dir, "demo-"+mode+".elf")
	if have, err := os.ReadFile(path); err == nil && string(have) == string(img) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("write the demo guest: %w", err)
	}
	if err := store.WriteFileAtomic(dir, filepath.Base(path), img); err != nil {
		return "", fmt.Errorf("write the demo guest: %w", err)
	}
	return path, nil
}

// vmmConfig is the driver configuration of the sandbox rec living in dir.
func vmmConfig(rec *record, dir string) vmm.Config {
	s := rec.Spec
	cfg := vmm.Config{
		Firecracker:  s.Firecracker,
		ID:           vmmID(rec.ID),
		RunDir:       dir,
		SocketPath:   filepath.Join(dir, apiSocketName),
		Kernel:       rec.Kernel,
		Initrd:       s.Initrd,
		KernelArgs:   s.KernelArgs,
		VCPUs:        s.VCPUs,
		MemoryMiB:    s.MemoryMiB,
		SMT:          s.SMT,
		Placeholders: s.Placeholders,
		LogPath:      filepath.Join(dir, fcLogName),
		WaitConsole:  s.WaitConsole,
	}
	if s.Rootfs != nil {
		cfg.Drives = append(cfg.Drives, vmm.Drive{ID: "rootfs", Path: s.Rootfs.Path, ReadOnly: s.Rootfs.ReadOnly, Root: true})
	}
	for i, d := range s.Drives {
		cfg.Drives = append(cfg.Drives, vmm.Drive{ID: fmt.Sprintf("drive%d", i), Path: d.Path, ReadOnly: d.ReadOnly})
	}
	for i, t := range rec.Taps {
		cfg.NetworkInterfaces = append(cfg.NetworkInterfaces, vmm.NetworkInterface{ID: fmt.Sprintf("eth%d", i), TapName: t.Name, MAC: t.MAC})
	}
	if s.VsockCID != 0 {
		cfg.Vsock = &vmm.Vsock{CID: s.VsockCID, Path: filepath.Join(dir, vsockName)}
	}
	if s.Jailer != "" {
		cfg.Jailer = jailerConfig(rec, dir)
	} else {
		cfg.NetNS = s.NetNS
	}
	applyNetwork(rec, &cfg)
	applyDevices(s, &cfg)
	return cfg
}

// vmmID is the VMM's ID for a sandbox: Firecracker takes only letters,
// digits and '-', sandbox IDs may also hold '_' and '.'.
func vmmID(id string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '.' {
			return '-'
		}
		return r
	}, id)
}

// tapsFor derives the sandbox's tap devices from its spec. Names and MACs
// of its own taps are derived from the state root, the ID and the
// interface's index, so that sandboxes of one ID under two roots differ.
func tapsFor(root string, s Spec) ([]tapRef, error) {
	var taps []tapRef
	seen := map[string]bool{}
	for i, n := range s.Net {
		t := tapRef{Name: n.Tap, NetNS: s.NetNS, MAC: n.MAC}
		seed := fmt.Sprintf("%s\x00%s/%d", root, s.ID, i)
		if n.Auto {
			t.Owned = true
			t.Name = netdev.TapName(seed)
		}
		if err := netdev.ValidateTapName(t.Name); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tap %q is given twice: give each interface its own tap", t.Name)
		}
		seen[t.Name] = true
		if t.MAC == "" {
			t.MAC = netdev.MAC(seed).String()
		} else if _, err := netdev.ParseMAC(t.MAC); err != nil {
			return nil, err
		}
		taps = append(taps, t)
	}
	return taps, nil
}
