package monitor

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/internal/vmmproc"
)

// Environment of a monitor process.
const (
	// EnvRoot is the state root of the monitor's sandbox.
	EnvRoot = "KINDLING_MONITOR_ROOT"
	// EnvID is the sandbox's ID.
	EnvID = "KINDLING_MONITOR_ID"
	// EnvRelease makes the program that calls sandbox.MonitorMain do one
	// piece of a sandbox's work for its small monitor instead of
	// monitoring it: the small monitor runs its starter's program so for
	// the work it does not link. Its values are ReleaseNetwork and
	// HelperDNS.
	EnvRelease = "KINDLING_MONITOR_RELEASE"
	// EnvOneProc says that the starter set GOMAXPROCS=1 for the monitor
	// (a monitor has little to run at once, and a Go process with one P
	// starts with less work: fewer threads, no idle P spinning for work);
	// the monitor takes both out of its environment before it runs
	// anything, so that the VMM and helpers do not inherit them.
	EnvOneProc = "KINDLING_MONITOR_GOMAXPROCS"
	// EnvSpare starts a spare monitor: one started ahead of need, with
	// EnvRoot but no EnvID, that waits for a Claim on its stdin (its
	// sandbox), then for its Plan, as a monitor started for its sandbox
	// does. Its stdin's end before a claim makes it exit 0.
	EnvSpare = "KINDLING_MONITOR_SPARE"
)

// Claim gives a spare monitor its sandbox: one JSON line on its stdin,
// before the plan. The monitor then opens its log in the sandbox's
// directory as its stdout and stderr, makes the directory its working
// directory and writes the ID into its command line's argument 1, so that
// it is the sandbox's monitor as if it had been started for it.
type Claim struct {
	ID string `json:"id"`
	// Log is the file name of the monitor's log in the sandbox's directory.
	Log string `json:"log"`
}

// SpareArg is a spare monitor's argument 1 (after Arg0): room, in its
// command line, for the ID of the sandbox that claims it.
var SpareArg = "spare" + strings.Repeat(" ", store.MaxIDLen-len("spare"))

// What a helper run with EnvRelease does.
const (
	// ReleaseNetwork tears down the sandbox's CNI networks, then exits.
	ReleaseNetwork = "network"
	// HelperDNS runs the DNS forwarder of the sandbox's slot until SIGTERM.
	// It closes its descriptor ReportFD once the forwarder is up (or has
	// failed, which it logs: the guest then has no resolver).
	HelperDNS = "dns"
)

// ReleaseLogPrefix starts the line the network tear-down helper logs
// (into the monitor's log) once it is done.
const ReleaseLogPrefix = "kindling-release"

// Arg0 is a monitor's argv[0], which names it in ps (and by which a
// sandbox's processes are found when its record is lost).
const Arg0 = "kindling-monitor"

// ReportFD is the monitor's descriptor for its reports to its starter
// (exec.Cmd.ExtraFiles[0]): a stream of JSON Report values.
const ReportFD = 3

// VerdictFD is the monitor's descriptor for its starter's Verdict
// (exec.Cmd.ExtraFiles[1]). Its end without a verdict means the starter
// died: the VMM is killed.
const VerdictFD = 4

// PlanVersion is the version of Plan this package reads. A monitor
// executable of another build refuses a plan of another version, with an
// error that says to install kindling-monitor from the same build.
//
// Version 3: the monitor spawns the VMM and its starter configures it
// through the API (vmm.WithSpawner), then sends a Verdict. Version 2 had
// the monitor configure the VMM itself.
const PlanVersion = 3

// maxPlanSize bounds the plan read from stdin.
const maxPlanSize = 4 << 20

// Plan is what a monitor is told to start, on its stdin. Its starter
// builds it (the command line is the VMM driver's, from the sandbox's
// record, after checking the executables it names against the caller's;
// see sandbox's trust rules): the monitor runs what the plan says, never
// what a file on disk says.
type Plan struct {
	Version int `json:"version"`
	// RunDir is the sandbox's directory.
	RunDir string `json:"run_dir"`
	// Command is the VMM's command line (Firecracker or the jailer).
	Command vmmproc.Command `json:"command"`
	// Console is the name of the console log in the sandbox's directory.
	Console string `json:"console"`
	// Sockets are names of files in the sandbox's directory removed once
	// the VMM is gone (its API and vsock sockets).
	Sockets []string `json:"sockets,omitempty"`
	// Helper is the program (one that calls sandbox.MonitorMain) run with
	// EnvRelease=network when the sandbox holds CNI networks at its end and
	// the monitor has no Hooks.ReleaseNetwork of its own, and with
	// EnvRelease=dns for DNS when the monitor has no Hooks.StartDNS.
	Helper string `json:"helper,omitempty"`
	// DNS: the sandbox has a slot network, whose DNS forwarder runs while
	// the VMM does (started with it, stopped before the network is torn
	// down).
	DNS bool `json:"dns,omitempty"`
	// Jail is what the monitor of a sandbox run under the jailer cleans
	// once its VMM has ended; nil without the jailer.
	Jail *Jail `json:"jail,omitempty"`
}

// Jail is what a jailed sandbox's VMM leaves on the host, as its starter
// found it: the monitor removes it at every end, and gives back the jail
// uid when it removes the sandbox.
type Jail struct {
	// UID is the jail's uid, never 0; its ACL entries on Writable (and on
	// the writable drives hot-plugged when the VMM ended) are revoked.
	UID int `json:"uid"`
	// Writable are the VMM's writable drive files on the host.
	Writable []string `json:"writable,omitempty"`
	// Chroots are the jail directories of the sandbox's VMM ID under each
	// Firecracker's directory of the state root's jail base (a previous
	// run's may be of another Firecracker), removed with all they hold.
	Chroots []string `json:"chroots,omitempty"`
	// Cgroups are the VMM's cgroup directories, in every hierarchy.
	Cgroups []string `json:"cgroups,omitempty"`
	// IDFile is the sandbox's file in the host's jail-uid registry, which
	// holds the sandbox's directory while the sandbox holds the uid, and
	// IDLock the registry's lock file.
	IDFile string `json:"id_file,omitempty"`
	IDLock string `json:"id_lock,omitempty"`
	// Parents are the directories holding the state root's jails and
	// cgroups, removed (those empty) with the root's last sandbox.
	Parents []string `json:"parents,omitempty"`
	// Copies is the sandbox's directory of its own drive copies outside
	// its directory, if it has one, removed with the sandbox.
	Copies string `json:"copies,omitempty"`
	// Shared is the state root's directory of shared copies
	// (vmm.JailerConfig.SharedDir): the jail's entries there are released
	// at the VMM's end (vmmproc.ReleaseShared).
	Shared string `json:"shared,omitempty"`
}

// Report is one message a monitor writes on its report descriptor. The
// first says whether the VMM was spawned (PID and StartTime) or not
// (Error); then, if the VMM exits before the verdict, one with Exit; then,
// after a commit, one with Running (the record says so) or Error.
type Report struct {
	Error string `json:"error,omitempty"`
	// Kind names the sentinel the error matched (see KindCode), so that
	// the error the starter returns matches it too.
	Kind string `json:"kind,omitempty"`
	// PID and StartTime name the spawned VMM.
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
	// Exit is how the VMM ended before the verdict, and Stderr the tail of
	// its stderr.
	Exit   *vmmproc.Exit `json:"exit,omitempty"`
	Stderr string        `json:"stderr,omitempty"`
	// Running: the committed VMM is recorded as running.
	Running bool `json:"running,omitempty"`
}

// Verdict is what the starter writes on the monitor's verdict descriptor
// once it has configured the VMM, or failed to.
type Verdict struct {
	// Commit: the VM runs; record it as running, with Machine (the
	// driver's vmm.MachineState) as the record's machine.
	Commit  bool            `json:"commit,omitempty"`
	Machine json.RawMessage `json:"machine,omitempty"`
	// Error (and its Kind) is why the start failed, without Commit: the
	// monitor kills the VMM and records it as the exit's error.
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

// errorKinds are the sentinels an error keeps across the report, by the
// code it travels as.
var errorKinds = []struct {
	code string
	err  error
}{
	{"not_found", errdefs.ErrNotFound},
	{"exists", errdefs.ErrExists},
	{"not_supported", errdefs.ErrNotSupported},
	{"invalid", errdefs.ErrInvalid},
	{"conflict", errdefs.ErrConflict},
	{"unavailable", errdefs.ErrUnavailable},
	{"corrupt", errdefs.ErrCorrupt},
}

// KindCode is the code of the first sentinel err matches, "" for none.
func KindCode(err error) string {
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.code
		}
	}
	return ""
}

// reportedError is an error read from a report: its text, and the sentinel
// it matched in the monitor.
type reportedError struct {
	msg  string
	kind error
}

func (e *reportedError) Error() string { return e.msg }

// Is reports whether target is the sentinel the error matched.
func (e *reportedError) Is(target error) bool { return e.kind != nil && target == e.kind }

// Err rebuilds the error of a report; nil when it reports success.
func (r Report) Err() error {
	if r.Error == "" {
		return nil
	}
	e := &reportedError{msg: r.Error}
	for _, k := range errorKinds {
		if k.code == r.Kind {
			e.kind = k.err
		}
	}
	return e
}
