package monitor

import (
	"encoding/json"
	"fmt"
	"time"
)

// Statuses the monitor reads and writes, as package sandbox stores them.
const (
	StatusStarting = "starting"
	StatusRunning  = "running"
	StatusExited   = "exited"
)

// record is a sandbox's state file as the monitor sees it: every field
// kept as read, so that saving it changes only the fields the monitor set.
// The monitor does not link package sandbox (which defines the record),
// so it names the few fields it owns here; sandbox's tests check that the
// names and shapes agree.
type record map[string]json.RawMessage

// get decodes field key into v; a missing or null field leaves v as is.
func (r record) get(key string, v any) error {
	b, ok := r[key]
	if !ok || string(b) == "null" {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("state field %q: %w", key, err)
	}
	return nil
}

// set encodes v as field key.
func (r record) set(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state field %q: %w", key, err)
	}
	r[key] = b
	return nil
}

// held reports whether field key is present and not null or false.
func (r record) held(key string) bool {
	switch b, ok := r[key]; {
	case !ok:
		return false
	default:
		s := string(b)
		return s != "null" && s != "false" && s != ""
	}
}

// ProcRef names a process as the record does: PID and start time.
type ProcRef struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Tap is a tap device as the record lists it.
type Tap struct {
	Name  string `json:"name"`
	NetNS string `json:"netns,omitempty"`
	MAC   string `json:"mac"`
	Owned bool   `json:"owned,omitempty"`
}

// Exit is how the VMM ended, as the record stores it (sandbox.Exit).
type Exit struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	At     time.Time `json:"at"`
	Error  string    `json:"error,omitempty"`
}
