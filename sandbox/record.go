package sandbox

import (
	"time"

	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// Status is where a sandbox is in its life, as the host shows it.
type Status string

// Statuses. Stored records only ever hold Created, Starting, Running, Paused
// and Exited; Orphaned and Unknown come from reconciling a record with the
// host (see Runtime.Inspect).
const (
	// Created: the sandbox exists but its VMM has not been started.
	Created Status = "created"
	// Starting: a monitor is starting the VMM.
	Starting Status = "starting"
	// Running: the VMM runs the guest.
	Running Status = "running"
	// Paused: the guest's vCPUs are paused.
	Paused Status = "paused"
	// Exited: the VMM has exited; Info.Exit says how.
	Exited Status = "exited"
	// Orphaned: the VMM runs but its monitor is gone. It can still be
	// stopped and removed; nothing will record its exit status.
	Orphaned Status = "orphaned"
)

// record is a sandbox's state file. Paths inside are absolute.
type record struct {
	ID        string    `json:"id"`
	Spec      Spec      `json:"spec"`
	CreatedAt time.Time `json:"created_at"`
	// AutoRemove makes the monitor remove the sandbox when its VMM exits.
	AutoRemove bool   `json:"auto_remove,omitempty"`
	Status     Status `json:"status"`
	// Kernel is the kernel actually booted (Spec.Kernel or the demo guest).
	Kernel string `json:"kernel"`
	// Monitor is the sandbox's monitor process while it runs.
	Monitor *procRef `json:"monitor,omitempty"`
	// Machine is what the VMM driver needs to re-attach to the VMM.
	Machine *vmm.MachineState `json:"machine,omitempty"`
	// Taps are the tap devices the sandbox uses; Owned ones were created for
	// it and are deleted when its VMM exits.
	Taps []tapRef `json:"taps,omitempty"`
	// NetActive is set from the moment the sandbox's CNI networks are
	// being set up until they are torn down again; Network is what the
	// set-up made. NetActive without Network is a start that crashed
	// halfway: gc tears down by the sandbox's ID.
	NetActive bool            `json:"net_active,omitempty"`
	Network   *network.Record `json:"network,omitempty"`
	// RestoreFrom is the snapshot directory a restored sandbox starts from.
	RestoreFrom string    `json:"restore_from,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	Exit        *Exit     `json:"exit,omitempty"`
	// Jail is the uid and gid a jailed sandbox holds from its first start
	// until it is removed (jail.go).
	Jail *jailRec `json:"jail,omitempty"`
	// CopyDir is the directory outside the sandbox's directory holding its
	// own copies of drives, when it has one (rootfscopy.go); it goes with
	// the sandbox.
	CopyDir string `json:"copy_dir,omitempty"`

	// dirID is the name of the directory the record was read from, which
	// is the sandbox's ID whatever ID says (a copied or edited state file
	// may say another); not stored.
	dirID string
}

// procRef names a process so that a recycled PID is never mistaken for it.
type procRef struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// tapRef is a tap device of the sandbox.
type tapRef struct {
	Name  string `json:"name"`
	NetNS string `json:"netns,omitempty"`
	MAC   string `json:"mac"`
	Owned bool   `json:"owned,omitempty"`
}

// Exit says how a sandbox's VMM ended.
type Exit struct {
	// Code is the exit status, or -1 when the VMM was killed by a signal
	// or its status could not be known.
	Code int `json:"code"`
	// Signal names the signal that killed the VMM, if one did.
	Signal string `json:"signal,omitempty"`
	// At is when the exit was seen.
	At time.Time `json:"at"`
	// Error is why the VMM never came up, or why its status is unknown.
	Error string `json:"error,omitempty"`
}
