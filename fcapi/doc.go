// Package fcapi is a typed client for Firecracker's HTTP API, spoken over the
// VMM's Unix socket.
//
// It has one method per endpoint of the v1 API and a Go type for every
// request and response. It probes the release it talks to and shapes each
// request for it, so a field that release does not know is never sent.
//
// It is not a process manager: spawning, stopping and supervising Firecracker
// belong to package vmm, which is this package's only importer inside kindling.
package fcapi
