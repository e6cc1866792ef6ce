package fakefc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// EnvSettings is the environment variable holding the emulation Settings as
// a JSON object.
const EnvSettings = "FAKEFC"

// ErrBadSettings is matched by errors from ParseSettings.
var ErrBadSettings = errors.New("bad FAKEFC settings")

// Settings say how the fake behaves beyond what the API asks of it. The zero
// value emulates DefaultVersion with no faults.
type Settings struct {
	// Version is the Firecracker release emulated.
	Version Version
	// Delay is added before every API answer.
	Delay time.Duration
	// Fail lists injected error answers.
	Fail []Fault
	// ExitAt, when > 0, makes the process exit(1) on receiving its ExitAt-th
	// API request (1-based) without answering it.
	ExitAt int
	// NoSocket keeps the API socket from being created; the process still
	// runs until killed.
	NoSocket bool
	// DieAtStart makes the process write a line to stderr and exit(1) at once.
	DieAtStart bool
	// Stderr is an extra line written to stderr at start.
	Stderr string
	// IgnoreSIGTERM makes the process ignore SIGTERM.
	IgnoreSIGTERM bool
	// CtrlAltDel is what SendCtrlAltDel does to the guest.
	CtrlAltDel CtrlAltDel
	// SimSIGSTOP makes pause stop a simulated guest's processes with
	// SIGSTOP (and resume continue them) even where a cgroup v2 freezer
	// could be used, to test that fallback.
	SimSIGSTOP bool
}

// Fault is one injected error answer.
type Fault struct {
	// Method and Path select the request, e.g. "PUT" and "/drives/rootfs".
	Method string `json:"method"`
	Path   string `json:"path"`
	// Status is the HTTP status answered (400 when 0).
	Status int `json:"status,omitempty"`
	// Message is the fault_message answered.
	Message string `json:"fault"`
	// Count is how many matching requests fail; 0 means all of them.
	Count int `json:"count,omitempty"`
}

// CtrlAltDel is the emulated guest's reaction to SendCtrlAltDel.
type CtrlAltDel string

const (
	// CtrlAltDelExit powers the guest off: the process exits 0.
	CtrlAltDelExit CtrlAltDel = "exit"
	// CtrlAltDelIgnore ignores the key press: the VM keeps running.
	CtrlAltDelIgnore CtrlAltDel = "ignore"
)

// settingsJSON is the wire form of Settings.
type settingsJSON struct {
	Version       string  `json:"version,omitempty"`
	Delay         string  `json:"delay,omitempty"`
	Fail          []Fault `json:"fail,omitempty"`
	ExitAt        int     `json:"exit_at,omitempty"`
	NoSocket      bool    `json:"no_socket,omitempty"`
	DieAtStart    bool    `json:"die_at_start,omitempty"`
	Stderr        string  `json:"stderr,omitempty"`
	IgnoreSIGTERM bool    `json:"ignore_sigterm,omitempty"`
	CtrlAltDel    string  `json:"ctrl_alt_del,omitempty"`
	SimSIGSTOP    bool    `json:"sim_sigstop,omitempty"`
}

// ParseSettings parses the FAKEFC value s; an empty s gives the defaults.
// Unknown keys are refused so a typo in a test does not go unnoticed.
func ParseSettings(s string) (Settings, error) {
	out := Settings{Version: DefaultVersion, CtrlAltDel: CtrlAltDelExit}
	if len(bytes.TrimSpace([]byte(s))) == 0 {
		return out, nil
	}
	var w settingsJSON
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Settings{}, fmt.Errorf("%w: %w", ErrBadSettings, err)
	}
	if w.Version != "" {
		v, err := ParseVersion(w.Version)
		if err != nil {
			return Settings{}, fmt.Errorf("%w: %w", ErrBadSettings, err)
		}
		out.Version = v
	}
	if w.Delay != "" {
		d, err := time.ParseDuration(w.Delay)
		if err != nil || d < 0 {
			return Settings{}, fmt.Errorf("%w: delay %q is not a duration", ErrBadSettings, w.Delay)
		}
		out.Delay = d
	}
	for i, f := range w.Fail {
		if f.Method == "" || f.Path == "" {
			return Settings{}, fmt.Errorf("%w: fail[%d] needs method and path", ErrBadSettings, i)
		}
		if f.Status == 0 {
			w.Fail[i].Status = 400
		}
		if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
			return Settings{}, fmt.Errorf("%w: fail[%d] status %d", ErrBadSettings, i, f.Status)
		}
		if f.Count < 0 {
			return Settings{}, fmt.Errorf("%w: fail[%d] count %d", ErrBadSettings, i, f.Count)
		}
	}
	out.Fail = w.Fail
	if w.ExitAt < 0 {
		return Settings{}, fmt.Errorf("%w: exit_at %d", ErrBadSettings, w.ExitAt)
	}
	out.ExitAt = w.ExitAt
	out.NoSocket = w.NoSocket
	out.DieAtStart = w.DieAtStart
	out.Stderr = w.Stderr
	out.IgnoreSIGTERM = w.IgnoreSIGTERM
	out.SimSIGSTOP = w.SimSIGSTOP
	switch CtrlAltDel(w.CtrlAltDel) {
	case "":
	case CtrlAltDelExit, CtrlAltDelIgnore:
		out.CtrlAltDel = CtrlAltDel(w.CtrlAltDel)
	default:
		return Settings{}, fmt.Errorf("%w: ctrl_alt_del %q (want %q or %q)", ErrBadSettings, w.CtrlAltDel, CtrlAltDelExit, CtrlAltDelIgnore)
	}
	return out, nil
}

// MarshalJSON writes s in the FAKEFC format that ParseSettings reads.
func (s Settings) MarshalJSON() ([]byte, error) {
	w := settingsJSON{
		Fail: s.Fail, ExitAt: s.ExitAt, NoSocket: s.NoSocket, DieAtStart: s.DieAtStart,
		Stderr: s.Stderr, IgnoreSIGTERM: s.IgnoreSIGTERM, CtrlAltDel: string(s.CtrlAltDel),
		SimSIGSTOP: s.SimSIGSTOP,
	}
	if !s.Version.IsZero() {
		w.Version = s.Version.String()
	}
	if s.Delay > 0 {
		w.Delay = s.Delay.String()
	}
	return json.Marshal(w)
}

// Env returns s as an environment entry, "FAKEFC={...}", for exec.Cmd.Env.
func (s Settings) Env() string {
	b, err := s.MarshalJSON()
	if err != nil {
		// Every field marshals; this cannot happen.
		panic(fmt.Sprintf("marshal fake firecracker settings: %v", err))
	}
	return EnvSettings + "=" + string(b)
}
