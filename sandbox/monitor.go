package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/vmm"
)

// startTimeout bounds a monitor's start of the VMM when the caller gave no
// deadline of its own (the caller can still abort earlier with SIGTERM).
const startTimeout = monitor.StartTimeout

// MonitorExecutableName is the file name of the small monitor executable
// (cmd/kindling-monitor): a Runtime runs it as each sandbox's monitor when
// it is in the directory of the program that would otherwise be the
// monitor (see WithMonitorExecutable).
const MonitorExecutableName = "kindling-monitor"

// MonitorMain runs the sandbox monitor and exits, when this process was
// started as one by a Runtime (or, for a small monitor, to tear down a
// sandbox's networks or run its DNS forwarder); otherwise it returns at
// once. Programs that embed the runtime call it first thing in main.
func MonitorMain() {
	if !monitor.Requested() {
		return
	}
	switch h := os.Getenv(monitor.EnvRelease); h {
	case "":
		os.Exit(monitor.Main(monitor.Hooks{ReleaseNetwork: releaseNetworkOf, StartDNS: startDNSOf}))
	case monitor.ReleaseNetwork:
		os.Exit(releaseMain())
	case monitor.HelperDNS:
		os.Exit(dnsMain())
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: a monitor's helper does %q or %q: install kindling-monitor from the same build as this program\n",
			monitor.EnvRelease, h, monitor.ReleaseNetwork, monitor.HelperDNS)
		os.Exit(2)
	}
}

// dnsMain runs the DNS forwarder of the sandbox the environment names
// until SIGTERM, for its small monitor, which does not link package
// network. It closes the monitor's pipe once the forwarder is up.
func dnsMain() int {
	root, id := os.Getenv(monitor.EnvRoot), os.Getenv(monitor.EnvID)
	syscall.CloseOnExec(monitor.ReportFD)
	up := os.NewFile(monitor.ReportFD, "ready")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("sandbox", id, "helper", monitor.HelperDNS)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	st, err := store.Open(root)
	if err != nil {
		log.Error("DNS forwarder", "err", err)
		return 1
	}
	stop := startDNSOf(st, id, log)
	if up != nil {
		up.Close()
	}
	<-term
	stop()
	return 0
}

// releaseMain tears down the networks of the sandbox the environment
// names, for its small monitor, which does not link package network.
func releaseMain() int {
	root, id := os.Getenv(monitor.EnvRoot), os.Getenv(monitor.EnvID)
	st, err := store.Open(root)
	if err == nil {
		err = releaseNetworkOf(context.Background(), st, id)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tear down the networks of sandbox %q: %v\n", id, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "%s: tore down the networks of sandbox %q\n", monitor.ReleaseLogPrefix, id)
	return 0
}

// releaseNetworkOf tears down the CNI networks of the exited sandbox id
// under its lock, and removes the sandbox if it was created to be removed
// and nothing is left. A second call finds nothing to do: the record says
// once the networks are gone, so each is deleted exactly once.
func releaseNetworkOf(ctx context.Context, st *store.Store, id string) error {
	l, err := st.Lock(ctx, id)
	if err != nil {
		return err
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		return err
	}
	if rec.Status != Exited {
		// Started again meanwhile: its networks are the new run's.
		return nil
	}
	err = releaseNetwork(ctx, &rec)
	if rec.AutoRemove && !rec.NetActive && rec.Network == nil {
		// Its monitor cleaned the jail when the VMM ended; the uid goes
		// with the sandbox.
		if jerr := releaseJailID(st.Root(), id, rec.Jail); jerr != nil {
			err = errors.Join(err, jerr)
		}
		err = errors.Join(err, removeCopyDir(l.Dir(), &rec))
		err = errors.Join(err, l.Remove())
		removeEmptyJailParents(st.Root())
		return err
	}
	if serr := l.Save(&rec); err == nil {
		err = serr
	}
	return err
}

// bootPlan is what a start of a sandbox needs: the monitor's plan (the
// spawner fills in its command line), the VMM's configuration, and for a
// restored sandbox the snapshot to load.
type bootPlan struct {
	plan    monitor.Plan
	cfg     vmm.Config
	restore *vmm.RestoreConfig
	// placeholders is the access mode of the hotplug placeholders.
	placeholders vmm.PlaceholderAccess
}

// bootPlanOf builds the boot plan of rec, living in dir, here in the
// starter, so that the monitor runs what its caller checked and needs no
// part of this package nor the VMM driver.
func (r *Runtime) bootPlanOf(rec *record, dir string) (*bootPlan, error) {
	if err := checkJailUID(rec); err != nil {
		return nil, err
	}
	cfg := vmmConfig(rec, dir)
	// The monitor writes the console there; the driver only reads it, for
	// WaitConsole.
	cfg.ConsolePath = filepath.Join(dir, consoleName)
	bp := &bootPlan{cfg: cfg, plan: monitor.Plan{
		Version: monitor.PlanVersion,
		RunDir:  dir,
		Console: consoleName,
		Sockets: []string{apiSocketName, vsockName},
		Helper:  r.fullMonitorExe,
		DNS:     rec.Network != nil && rec.Network.Slot != nil,
		Jail:    jailPlan(rec, dir, cfg),
	}}
	if rec.Spec.HotplugWritable {
		bp.placeholders = vmm.PlaceholdersReadWrite
	}
	if rec.RestoreFrom != "" {
		rc, err := restoreConfigOf(cfg, rec)
		if err != nil {
			return nil, err
		}
		bp.restore = rc
	}
	return bp, nil
}

// restoreConfigOf is the snapshot rec was created from, to be loaded into
// a VMM configured like cfg: the taps that moved since are overridden.
func restoreConfigOf(cfg vmm.Config, rec *record) (*vmm.RestoreConfig, error) {
	man, err := readManifest(rec.RestoreFrom)
	if err != nil {
		return nil, err
	}
	rc := &vmm.RestoreConfig{Snapshot: man.Snapshot, Config: cfg, Resume: true}
	snapIfaces := man.Snapshot.Config.NetworkInterfaces
	for i, iface := range cfg.NetworkInterfaces {
		if i < len(snapIfaces) && snapIfaces[i].TapName != iface.TapName {
			rc.NetworkOverrides = append(rc.NetworkOverrides, vmm.NetworkOverride{IfaceID: snapIfaces[i].ID, TapName: iface.TapName})
		}
	}
	return rc, nil
}

// prepareLog creates the file path, empty unless it exists, in dir
// without following a link when it is in dir. Firecracker's log is the
// sandbox's, not the driver's: made here, it outlives a failed start (the
// driver removes only a log it created), so 'kindling logs --vmm' can tell
// why, until the sandbox is removed.
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

// MonitorExecutableFor returns the executable a Runtime whose monitor
// program (one that calls MonitorMain) is program starts as each sandbox's
// monitor: the small kindling-monitor in program's directory when it is
// there, else program itself (small false). Both come from the caller's
// install, never from anything on disk that a sandbox's record names.
func MonitorExecutableFor(program string) (path string, small bool) {
	return findMonitor(program)
}

// findMonitor is MonitorExecutableFor.
func findMonitor(full string) (exe string, small bool) {
	p := filepath.Join(filepath.Dir(full), MonitorExecutableName)
	if p == full {
		return full, true
	}
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return p, true
	}
	return full, false
}

// MonitorExecutable returns the executable this runtime starts as each
// sandbox's monitor, and whether it is the small kindling-monitor (false:
// the full program re-executed, which costs each sandbox more memory).
func (r *Runtime) MonitorExecutable() (path string, small bool) {
	return r.monitorExe, r.smallMonitor
}
