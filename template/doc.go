// Package template keeps templates: snapshots of a sandbox from which new
// sandboxes (clones) start in milliseconds without booting. A template owns
// copies of its source's writable drives, placeholder files and kernel, the
// snapshot that names them and a manifest with the checksum of every file;
// clones map its guest memory privately, so they share its pages
// copy-on-write, and each gets its own copies of the drives, its own taps
// and vsock socket.
//
// It is not a second runtime: a template is made with the runtime's
// Snapshot (sandbox.SnapshotOptions.Own) and a clone is a sandbox of the
// runtime, recorded with CreateFromSnapshot and started with Start. Build
// makes a template from a root filesystem (an image's, copied with package
// image's Clone): it boots a builder sandbox, runs setup commands through
// its agent, and snapshots it. The
// store lives under the runtime's state root (<root>/.templates) and uses
// internal/store's atomic write and lock, like the sandboxes' state.
//
// Errors match kindling's sentinels (ErrNotFound, ErrExists, ErrConflict,
// ErrCorrupt, ...), the same values package sandbox re-exports. The
// kindling CLI ('kindling template', 'kindling run --template') and the
// benchmark command are its importers.
package template
