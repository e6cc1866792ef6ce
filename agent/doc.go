// Package agent is the host side of kindling's guest agent: a client that
// reaches the agent inside a sandbox through Firecracker's hybrid vsock (or,
// for an agent run on the host in tests, a plain Unix socket) and runs
// processes, moves files and re-initialises the guest.
//
// The agent (cmd/kindling-agent, package agent/server) speaks E2B's envd
// protocol, so this client speaks it too: Connect RPCs for processes and the
// file system, plain HTTP for /init and /files. See docs/agent.md.
//
// Errors wrap the sentinels of internal/errdefs (re-exported here):
// ErrNotFound for a missing file or process, ErrUnavailable (naming the
// socket) when the agent does not answer or goes away mid-stream, ErrExists,
// ErrInvalid; ErrAccessDenied for a missing or wrong access token.
//
// It is imported by the runtime (sandbox), the CLI's exec and cp, and the
// server; it imports nothing of kindling but errdefs and its own spec.
package agent

// Port is the vsock port the guest agent serves on: envd's.
const Port = 49983
