// Package vmm drives one Firecracker process: it spawns it (directly or through
// the jailer), waits for its API, configures and starts the microVM, and then
// pauses, resumes, snapshots, restores, hot-plugs, introspects and stops it.
//
// It is the seed's Firecracker driver rebuilt: every operation returns its
// errors, stubs are either real or a typed ErrNotSupported, and stopping an
// exited VMM costs nothing.
//
// It is not a sandbox runtime: it keeps no state on disk and knows nothing of
// sandbox IDs, networking set-up or monitors; those live above it. It speaks to
// Firecracker only through package fcapi.
package vmm
