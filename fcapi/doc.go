// Package fcapi is a typed client for Firecracker's HTTP API, spoken over the
// VMM's Unix socket.
//
// It has one method per endpoint of the v1 API and a Go type for every
// request and response. It probes the release it talks to and shapes each
// request for it, so a field that release does not know is never sent: left
// at its zero value, the field is dropped; set, the request is refused with
// a *NotSupportedError before anything is sent. Renamed fields (the snapshot
// memory backend, dirty page tracking on load) are translated. The table of
// what each release accepts lives in one place (features.go) and is exposed
// as Feature and Capabilities.
//
// Failures come in distinct kinds, told apart with errors.Is / errors.As: a
// *TransportError (ErrUnavailable) when the socket cannot be reached or the
// VMM died, an *APIError (ErrBadRequest for 400) when Firecracker refused a
// request, a *NotSupportedError (ErrNotSupported) when the running release
// lacks what was asked, and an *UnsupportedVersionError
// (ErrUnsupportedVersion) for releases older than 1.0.
//
// It is not a process manager: spawning, stopping and supervising Firecracker
// belong to package vmm, the one package that talks to Firecracker through
// it. Inside kindling it is imported by vmm and, only for Version and the
// feature table (which release can clone a template), by package template;
// sandbox and the CLI do not import it. Its ErrUnavailable and
// ErrNotSupported are kindling's own sentinels (internal/errdefs), and its
// other sentinels match one of those kinds too.
package fcapi
