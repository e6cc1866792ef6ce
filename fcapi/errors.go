package fcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Sentinel errors, matched with errors.Is. ErrUnavailable and
// ErrNotSupported are kindling's own (internal/errdefs), the same values
// that vmm and sandbox re-export; the others are this package's and match
// one of kindling's kinds as well (ErrBadRequest matches an invalid-argument
// error, ErrBusy a conflict, ...), so a caller several layers up can
// branch on the kind without importing this package.
var (
	// ErrUnavailable matches a *TransportError: the API socket could not be
	// reached or the connection broke (wrong path, dead VMM, timeout).
	ErrUnavailable = errdefs.ErrUnavailable
	// ErrBadRequest matches an *APIError with status 400 (and
	// errdefs.ErrInvalid).
	ErrBadRequest = errdefs.New(errdefs.ErrInvalid, "firecracker rejected the request")
	// ErrNotFound matches an *APIError with status 404. It is deliberately
	// not kindling's not-found kind: an endpoint Firecracker does not serve
	// is not a missing sandbox or file.
	ErrNotFound = errors.New("firecracker resource not found")
	// ErrBusy matches an *APIError with status 503 (and
	// errdefs.ErrConflict, kindling's busy kind): Firecracker already serves
	// its most connections (10) and refused one more. The VMM answered, so it
	// is not ErrUnavailable.
	ErrBusy = errdefs.New(errdefs.ErrConflict, "firecracker api busy: too many open connections")
	// ErrNotSupported matches a *NotSupportedError: the running release lacks
	// an endpoint or field the caller asked for.
	ErrNotSupported = errdefs.ErrNotSupported
	// ErrUnsupportedVersion matches an *UnsupportedVersionError: the running
	// release is too old for this package. It is kept apart from
	// ErrNotSupported (one request the release lacks): nothing at all can
	// be sent to such a release.
	ErrUnsupportedVersion = errors.New("unsupported firecracker version")
	// ErrInvalidResponse matches a *DecodeError (and errdefs.ErrCorrupt):
	// Firecracker answered with a body that could not be decoded.
	ErrInvalidResponse = errdefs.New(errdefs.ErrCorrupt, "invalid firecracker response")
	// ErrSocketPathTooLong is returned by New for a socket path that does not
	// fit in a sockaddr_un. It matches errdefs.ErrInvalid.
	ErrSocketPathTooLong = errdefs.New(errdefs.ErrInvalid, "unix socket path too long")
	// ErrEmptyID is returned, without sending anything, for a device
	// request whose id is empty. It matches errdefs.ErrInvalid.
	ErrEmptyID = errdefs.New(errdefs.ErrInvalid, "empty device id")
)

// APIError is a non-2xx answer from Firecracker.
type APIError struct {
	Method       string
	Path         string
	StatusCode   int
	FaultMessage string
}

func (e *APIError) Error() string {
	status := http.StatusText(e.StatusCode)
	if status == "" {
		status = "status"
	}
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.StatusCode, status)
	if e.FaultMessage != "" {
		s += ": " + e.FaultMessage
	}
	return s
}

// Is matches ErrBadRequest (and errdefs.ErrInvalid) for 400, ErrNotFound
// for 404 and ErrBusy (and errdefs.ErrConflict) for 503.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrBadRequest, errdefs.ErrInvalid:
		return e.StatusCode == http.StatusBadRequest
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrBusy, errdefs.ErrConflict:
		return e.StatusCode == http.StatusServiceUnavailable
	}
	return false
}

// maxFaultBytes bounds a fault message kept from a body that is not JSON.
const maxFaultBytes = 512

// decodeAPIError builds the *APIError for a non-2xx answer. It never fails:
// a body that is not Firecracker's {"fault_message": ...} is kept as text.
func decodeAPIError(method, path string, status int, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, StatusCode: status}
	var fault struct {
		FaultMessage string `json:"fault_message"`
	}
	if err := json.Unmarshal(body, &fault); err == nil {
		e.FaultMessage = fault.FaultMessage
		return e
	}
	text := strings.ToValidUTF8(strings.TrimSpace(string(body)), "\uFFFD")
	if len(text) > maxFaultBytes {
		cut := maxFaultBytes
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	e.FaultMessage = text
	return e
}

// TransportError is a failure to exchange a request with Firecracker: no
// socket at the path, connection refused, the VMM died mid-request, or the
// deadline passed. It wraps the cause and matches ErrUnavailable.
type TransportError struct {
	Method string
	Path   string
	Socket string
	Err    error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("%s %s: %s: %v", e.Method, e.Path, e.diagnosis(), e.Err)
}

// diagnosis says in words what the cause most likely means.
func (e *TransportError) diagnosis() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist):
		return fmt.Sprintf("no API socket at %s (wrong path, or Firecracker not started)", e.Socket)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens on %s (Firecracker has exited)", e.Socket)
	case errors.Is(e.Err, io.EOF), errors.Is(e.Err, io.ErrUnexpectedEOF),
		errors.Is(e.Err, syscall.ECONNRESET), errors.Is(e.Err, syscall.EPIPE):
		return fmt.Sprintf("connection to %s closed mid-request (Firecracker died?)", e.Socket)
	case errors.Is(e.Err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from %s before the deadline", e.Socket)
	case errors.Is(e.Err, context.Canceled):
		return fmt.Sprintf("request to %s cancelled", e.Socket)
	default:
		return fmt.Sprintf("firecracker api at %s unavailable", e.Socket)
	}
}

// Unwrap returns the cause.
func (e *TransportError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *TransportError) Is(target error) bool { return target == ErrUnavailable }

// DecodeError is a 2xx answer whose body could not be decoded.
type DecodeError struct {
	Method string
	Path   string
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s %s: decode response: %v", e.Method, e.Path, e.Err)
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalidResponse) and errors.Is(err,
// errdefs.ErrCorrupt) true.
func (e *DecodeError) Is(target error) bool {
	return target == ErrInvalidResponse || target == errdefs.ErrCorrupt
}

// NotSupportedError reports a request the running release cannot serve: an
// endpoint it lacks, or a field the caller set that it does not know. Nothing
// was sent. It matches ErrNotSupported.
type NotSupportedError struct {
	// Feature names what was asked for, e.g. "memory hotplug".
	Feature string
	// Field is the API field or endpoint, e.g. "PUT /hotplug/memory".
	Field string
	// Have is the running release.
	Have Version
	// Need is the first release with the feature.
	Need Version
	// Removed, when not zero, is the first release without the feature.
	Removed Version
}

func (e *NotSupportedError) Error() string {
	name := e.Feature
	if e.Field != "" && e.Field != e.Feature {
		name += " (" + e.Field + ")"
	}
	if !e.Removed.IsZero() && e.Have.AtLeast(e.Removed) {
		return fmt.Sprintf("%s is not supported by Firecracker %s (removed in %s)", name, e.Have, e.Removed)
	}
	return fmt.Sprintf("%s is not supported by Firecracker %s (needs ≥ %s)", name, e.Have, e.Need)
}

// Is makes errors.Is(err, ErrNotSupported) true.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }
