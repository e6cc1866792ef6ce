package sandbox

import (
	"context"
	"io"
)

// Controller is what a caller of the runtime does with sandboxes. *Runtime
// implements it for the sandboxes of this host; a client of a kindling
// server can implement it for a remote one, so code written against
// Controller runs either way. Its methods take and return plain data
// (specs, options, Info, Exit, readers), never host handles, and their
// errors match the package's sentinels (ErrNotFound, ErrExists, ...), which
// a remote implementation maps its error codes back to. Paths (a snapshot
// directory, a drive) are paths on the host that runs the sandboxes.
//
// Capabilities not every implementation has are separate, small
// interfaces, found by type assertion: Hotplugger (drives) and Guest
// (running commands in the guest and moving files in and out of it,
// through the guest agent), rather than methods every Controller must
// have.
type Controller interface {
	// Create records a new sandbox from spec, in the Created state.
	Create(ctx context.Context, spec Spec, o CreateOptions) (Info, error)
	// Start boots a created (or exited) sandbox; it returns once the VM runs.
	Start(ctx context.Context, id string) (Info, error)
	// Stop stops the sandbox's VM (Ctrl-Alt-Del, SIGTERM, SIGKILL) within
	// ctx's deadline.
	Stop(ctx context.Context, id string, opts ...StopOption) error
	// Kill ends the sandbox's VM at once.
	Kill(ctx context.Context, id string) error
	// Remove deletes a sandbox; a running one only with force.
	Remove(ctx context.Context, id string, force bool) error
	// Inspect describes one sandbox.
	Inspect(ctx context.Context, id string) (Info, error)
	// List describes the sandboxes o selects.
	List(ctx context.Context, o ListOptions) ([]Info, error)
	// Wait waits until the sandbox's VM has exited and says how.
	Wait(ctx context.Context, id string) (*Exit, error)
	// Pause and Resume stop and restart the guest's vCPUs.
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Snapshot writes a snapshot of the sandbox into dir.
	Snapshot(ctx context.Context, id, dir string, o SnapshotOptions) (SnapshotInfo, error)
	// Restore starts a new sandbox from the snapshot in dir.
	Restore(ctx context.Context, dir string, o RestoreOptions) (Info, error)
	// Console reads what the guest wrote on its serial console.
	Console(ctx context.Context, id string, o LogOptions) (io.ReadCloser, error)
	// Logs reads the VMM's own log.
	Logs(ctx context.Context, id string, o LogOptions) (io.ReadCloser, error)
}

// Hotplugger is the optional drive hotplug of a Controller.
type Hotplugger interface {
	// AttachDrive puts a drive into a free hotplug slot of a running
	// sandbox and returns the slot's ID.
	AttachDrive(ctx context.Context, id string, d Disk) (string, error)
	// DetachDrive empties a hotplug slot.
	DetachDrive(ctx context.Context, id, slot string) error
}

var (
	_ Controller = (*Runtime)(nil)
	_ Hotplugger = (*Runtime)(nil)
)
