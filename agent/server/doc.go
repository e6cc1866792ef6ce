// Package server is the guest side of kindling's agent: the HTTP handler that
// the kindling-agent binary serves inside a sandbox, on vsock port 49983.
//
// It speaks E2B's envd protocol (see docs/agent.md): the Connect services
// process.Process (start processes with args, env, working directory and
// user, with or without a terminal; stream their output and exit; stdin,
// signals, terminal size, list and reconnect) and filesystem.Filesystem
// (stat, list, mkdir, move, remove, watch), in Connect's JSON or binary
// encoding, and the plain HTTP endpoints /health, /init, /envs and /files.
// Once /init has set an access token every request must carry it in the
// X-Access-Token header.
//
// What it is not: it does no PID-1 work (mounts, reaping orphans, power-off)
// and opens no listener of its own; cmd/kindling-agent does both and hands
// this package a net.Listener. The host-side client is package agent.
//
// Everything that changes the machine rather than the agent's own state
// (clock, entropy pool, hostname) goes through the System seam, so that a test
// can check it and an agent run on a host (--listen unix:PATH) leaves the
// host alone.
package server
