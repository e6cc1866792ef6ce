// Package container runs OCI-style containers inside a kindling guest: a
// process in its own mount, PID, UTS and IPC namespaces whose root is a
// container root filesystem (a drive, or a directory of the guest). It is
// the guest half of kindling's containerd shim (package shim); the E2B
// protocol knows nothing of it.
//
// It is not a protocol extension: the shim starts a container by running
// the agent binary itself as an ordinary process through the agent's
// process service,
//
//	/.kindling/kindling-agent container run SPEC-JSON
//	/.kindling/kindling-agent container exec SPEC-JSON
//
// so stdio, PTY, resize, signals and the exit status travel the way every
// agent process's do, and the wire protocol is unchanged. The agent binary
// dispatches on the first argument (Arg) before anything else (Main).
//
// "run" is the container's keeper: it starts the container's init — the
// agent re-executed as "container init" in new namespaces, which mounts the
// root filesystem and the standard file systems, pivots into the root and
// executes the container's command as PID 1 of its namespace — forwards
// every signal it gets to it, and exits as it exits (same code, or killed by
// the same signal). "exec" joins a running container's namespaces and runs
// one more process there, kept the same way. "unpack DIR" writes a tar
// stream from stdin into a new directory (a volume's copy); "stats ID" prints the container's Stats as JSON.
//
// The shim (host side) imports this package for Spec, Arg and the paths;
// cmd/kindling-agent calls Main.
package container
