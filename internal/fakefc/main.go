package fakefc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Exit statuses of the real Firecracker that the fake reproduces.
const (
	// ExitOK is a clean exit, including a guest power-off.
	ExitOK = 0
	// ExitError is a generic error (failed start, failed snapshot load).
	ExitError = 1
	// ExitArgParsing is a command line Firecracker does not accept.
	ExitArgParsing = 153
)

// DefaultSocket is the API socket path used when --api-sock is not given.
const DefaultSocket = "/run/firecracker.socket"

// Flags holds the command line, with the real Firecracker's flag names.
type Flags struct {
	APISock        string // --api-sock
	ID             string // --id
	LogPath        string // --log-path
	Level          string // --level
	ShowLevel      bool   // --show-level
	ShowLogOrigin  bool   // --show-log-origin
	BootTimer      bool   // --boot-timer
	NoSeccomp      bool   // --no-seccomp
	MaxPayload     int    // --http-api-max-payload-size
	MMDSSizeLimit  int    // --mmds-size-limit
	MetricsPath    string // --metrics-path
	Version        bool   // --version
	Help           bool   // --help
	ParentCPUTime  string // --parent-cpu-time-us (ignored)
	StartTimeUS    string // --start-time-us (ignored)
	StartTimeCPUUS string // --start-time-cpu-us (ignored)
}

var (
	// ErrUsage is matched by command-line errors from ParseFlags.
	ErrUsage = errors.New("arguments parsing error")
	// ErrNotEmulated is matched by errors for real Firecracker flags the
	// fake does not emulate (kindling never passes them).
	ErrNotEmulated = errors.New("not emulated by the fake firecracker")
)

// notEmulated lists real Firecracker flags the fake refuses with
// ErrNotEmulated rather than as unknown.
var notEmulated = map[string]bool{
	"config-file": true, "no-api": true, "describe-snapshot": true, "snapshot-version": true,
	"seccomp-filter": true, "metadata": true, "enable-pci": true, "module": true,
}

// ParseFlags parses Firecracker's command line. Flags take their value as
// the next argument or after "=".
func ParseFlags(args []string) (Flags, error) {
	f := Flags{APISock: DefaultSocket, ID: "anonymous-instance", MaxPayload: 51200}
	strs := map[string]*string{
		"api-sock": &f.APISock, "id": &f.ID, "log-path": &f.LogPath, "level": &f.Level,
		"metrics-path": &f.MetricsPath, "parent-cpu-time-us": &f.ParentCPUTime,
		"start-time-us": &f.StartTimeUS, "start-time-cpu-us": &f.StartTimeCPUUS,
	}
	ints := map[string]*int{"http-api-max-payload-size": &f.MaxPayload, "mmds-size-limit": &f.MMDSSizeLimit}
	bools := map[string]*bool{
		"show-level": &f.ShowLevel, "show-log-origin": &f.ShowLogOrigin, "boot-timer": &f.BootTimer,
		"no-seccomp": &f.NoSeccomp, "version": &f.Version,
	}
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			return Flags{}, fmt.Errorf("%w: found argument '%s' which wasn't expected", ErrUsage, a)
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		if notEmulated[name] {
			return Flags{}, fmt.Errorf("flag --%s: %w", name, ErrNotEmulated)
		}
		if name == "help" {
			f.Help = true
			continue
		}
		if seen[name] {
			return Flags{}, fmt.Errorf("%w: the argument '%s' was provided more than once", ErrUsage, name)
		}
		seen[name] = true
		if b, ok := bools[name]; ok {
			if hasVal {
				return Flags{}, fmt.Errorf("%w: the argument '%s' takes no value", ErrUsage, name)
			}
			*b = true
			continue
		}
		_, isStr := strs[name]
		_, isInt := ints[name]
		if !isStr && !isInt {
			return Flags{}, fmt.Errorf("%w: found argument '%s' which wasn't expected", ErrUsage, name)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return Flags{}, fmt.Errorf("%w: the argument '%s' requires a value", ErrUsage, name)
			}
			i++
			val = args[i]
		}
		if isStr {
			*strs[name] = val
			continue
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return Flags{}, fmt.Errorf("%w: the argument '%s' needs a number, got %q", ErrUsage, name, val)
		}
		*ints[name] = n
	}
	if f.Level != "" {
		if _, err := parseLevel(f.Level); err != nil {
			return Flags{}, fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	return f, nil
}

// Main runs the fake Firecracker with the command-line arguments args (not
// including the program name) and the settings in $FAKEFC, and returns the
// exit status. Most runs never return: the process serves its API until it
// is killed or exits the way the real one would (guest power-off, failed
// snapshot load).
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case stageArg:
			return runStage()
		case janitorArg:
			return runJanitor(args[1:])
		}
	}
	if err := dropJailCaps(); err != nil {
		fmt.Fprintf(stderr, "fake-firecracker: under the fake jailer: %v\n", err)
		return ExitError
	}
	settings, err := ParseSettings(os.Getenv(EnvSettings))
	if err != nil {
		fmt.Fprintf(stderr, "fake-firecracker: %v\n", err)
		return ExitError
	}
	if settings.Stderr != "" {
		fmt.Fprintln(stderr, settings.Stderr)
	}
	if settings.DieAtStart {
		fmt.Fprintln(stderr, "fake-firecracker: dying at start as FAKEFC asks")
		return ExitError
	}
	flags, err := ParseFlags(args)
	log := &logger{w: stdout, id: "anonymous-instance", max: levelInfo}
	if errors.Is(err, ErrNotEmulated) {
		fmt.Fprintf(stderr, "fake-firecracker: %v\n", err)
		return ExitError
	}
	if err != nil {
		log.errorf("main", "%v", err)
		log.errorf("main", "Firecracker exiting with error. exit_code=%d", ExitArgParsing)
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return ExitArgParsing
	}
	if flags.Help {
		fmt.Fprintf(stdout, "Firecracker v%s (fake)\n\nflags: --api-sock --id --log-path --level --show-level --show-log-origin --boot-timer --no-seccomp --metrics-path --http-api-max-payload-size --mmds-size-limit --version --help\n", settings.Version)
		return ExitOK
	}
	if flags.Version {
		fmt.Fprintf(stdout, "Firecracker v%s\n\n", settings.Version)
		return ExitOK
	}
	log.id = flags.ID
	log.showLevel = flags.ShowLevel
	log.showOrigin = flags.ShowLogOrigin
	if flags.Level != "" {
		log.max, _ = parseLevel(flags.Level)
	}
	if flags.LogPath != "" {
		f, err := openLogFile(flags.LogPath)
		if err != nil {
			fmt.Fprintf(stderr, "Error: open log file %q: %v\n", flags.LogPath, err)
			return ExitError
		}
		log.setFile(f)
	}
	if settings.IgnoreSIGTERM {
		signal.Ignore(syscall.SIGTERM)
	}
	log.info("main", "Running Firecracker v%s", settings.Version)

	fc := newServer(settings, flags, log, stdout, stderr)
	if flags.MetricsPath != "" {
		if err := fc.vm.openMetrics(flags.MetricsPath); err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return ExitError
		}
	}
	if settings.NoSocket {
		log.info("main", "Not creating the API socket, as FAKEFC asks.")
		for {
			time.Sleep(time.Hour)
		}
	}
	ln, err := listen(flags.APISock)
	if err != nil {
		log.errorf("main", "RunWithApiError error: Failed to open the API socket at: %s. Check that it is not already used.", flags.APISock)
		log.errorf("main", "Firecracker exiting with error. exit_code=%d", ExitError)
		fmt.Fprintf(stderr, "Error: bind API socket %q: %v\n", flags.APISock, err)
		return ExitError
	}
	log.info("main", "Listening on API socket (%q).", flags.APISock)
	errc := make(chan error, 1)
	go func() {
		// The accept loop runs on its own OS thread named like the real
		// API thread, so /proc shows an fc_api thread.
		runtime.LockOSThread()
		_ = kunix.SetThreadName("fc_api")
		log.info("fc_api", "API server started.")
		errc <- fc.serve(ln)
	}()
	err = <-errc
	log.errorf("main", "API server stopped: %v", err)
	return ExitError
}

// listen binds the API socket. Like Firecracker it refuses a path that
// exists ("address in use") and never removes the socket file.
func listen(path string) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}
