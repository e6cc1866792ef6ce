// Package server is kindlingd's HTTP server: kindling's native API (the
// Connect services of api/kindling/v1), an E2B-compatible REST API, and
// the routing of sandbox traffic (E2B's <port>-<sandboxID>.<domain>) into
// a sandbox's guest agent over its vsock.
//
// It is not a second runtime: every operation goes to a sandbox.Runtime
// and a template.Store on the same state root the CLI uses, through the
// runtime's per-sandbox locks, so the CLI and the server see and change
// the same sandboxes. The server keeps one kind of state of its own, the
// leases (a sandbox's lifetime and the E2B facts about it), under
// <root>/.kindlingd with internal/store's atomic writes and locks; a
// restarted server re-arms them. It is never the parent of a VM: each
// sandbox has its monitor, so the server can be killed at any moment
// without stopping a sandbox.
//
// Errors cross the native API as Connect codes (internal/apiconv) and the
// E2B API as E2B's Error body with a stable error_code. See docs/server.md.
//
// It is imported by cmd/kindlingd and by tests.
package server
