// Package store is kindling's on-disk state store for sandboxes: one directory
// per sandbox under a state root, a versioned state file written atomically
// inside it, and a lock per sandbox shared across processes, so that
// concurrent CLI commands, the per-sandbox monitor and gc serialise on one
// sandbox and a crash at any point leaves either the old state or the new one.
//
// Layout under the root (0700):
//
//	<root>/<id>/             the sandbox directory (0700): state, sockets, logs
//	<root>/<id>/state.json   {"version": 2, "data": ...} (0600)
//	<root>/.locks/<id>       the sandbox's flock file (0600)
//
// The lock file lives outside the sandbox directory, so that the directory
// is removed under the lock and the lock outlives it until the remover
// unlocks; a command waiting on it then finds the sandbox gone. Locks are
// flocks, released by the kernel when a holder dies, so a crashed command
// never leaves a sandbox locked.
//
// It also validates sandbox IDs (ValidateID), since an ID is a path element
// here; package sandbox generates them (crypto/rand, which the small
// monitor, an importer of this package, does not link).
//
// It is not the sandbox runtime: it stores any JSON-marshalable value inside
// its versioned envelope and knows nothing of a sandbox's fields, of
// processes, networking or Firecracker. It does not decide when a sandbox is
// dead; Clean removes only what a crash of the store's own operations leaves
// behind (directories of creates that never finished, stale temporary files,
// unused lock files).
//
// Its atomic write (WriteFileAtomic) and its lock (LockFile, shared or
// exclusive) are the only ones in kindling: snapshot and template manifests
// and the template store's lock use them too. Its ErrNotFound and ErrExists
// are kindling's sentinels (internal/errdefs); its other sentinels match
// one of those kinds.
//
// It is imported by the runtime (package sandbox), by package template and,
// for the root default and ID checks, by the CLI. It imports only the
// standard library and internal/errdefs.
package store
