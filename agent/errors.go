package agent

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// The sentinels an agent error matches (errors.Is), shared with the rest
// of kindling.
var (
	ErrNotFound    = errdefs.ErrNotFound
	ErrExists      = errdefs.ErrExists
	ErrInvalid     = errdefs.ErrInvalid
	ErrUnavailable = errdefs.ErrUnavailable
	// ErrNotSupported: the agent lacks what the call needs.
	ErrNotSupported = errdefs.ErrNotSupported
	// ErrAccessDenied: the agent refused the request: a missing or wrong
	// access token, an unknown user, or a file the user may not touch.
	ErrAccessDenied = errors.New("access denied")
	// ErrNoListener: Firecracker closed a vsock connection during the
	// handshake, which it does when nothing listens on the port in the
	// guest. It comes wrapped in an UnavailableError.
	ErrNoListener = errors.New("nothing listens on the vsock port in the guest")
)

// UnavailableError says the agent behind Socket did not answer: the socket
// is missing or refuses connections, the handshake timed out, or the
// connection broke mid-call (the agent died). It matches ErrUnavailable.
type UnavailableError struct {
	Socket string // the socket dialled
	Err    error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("agent at %q does not answer: %v", e.Socket, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Is reports ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// RemoteError is an error the agent returned. It matches the sentinel of
// its kind (ErrNotFound, ErrExists, ErrInvalid, ErrAccessDenied).
type RemoteError struct {
	Code    string // the Connect code ("not_found") or the HTTP status
	Message string
	kind    error
}

func (e *RemoteError) Error() string {
	if e.kind != nil {
		return fmt.Sprintf("%v: %s", e.kind, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is matches the sentinel of the error's kind.
func (e *RemoteError) Is(target error) bool { return e.kind != nil && target == e.kind }

// ExecError is a process that could not be started because its executable
// is missing or cannot be executed. ExitCode gives the status a shell (and
// docker exec) reports for that: 127 and 126.
type ExecError struct {
	Cmd      string
	NotFound bool // else: found but not executable
	Message  string
}

func (e *ExecError) Error() string { return e.Message }

// ExitCode is 127 for a missing executable, 126 for one that cannot run.
func (e *ExecError) ExitCode() int {
	if e.NotFound {
		return 127
	}
	return 126
}

// Is matches ErrNotFound for a missing executable, ErrInvalid otherwise.
func (e *ExecError) Is(target error) bool {
	if e.NotFound {
		return target == ErrNotFound
	}
	return target == ErrInvalid
}

// kindOf maps a Connect code to a sentinel.
func kindOf(code connect.Code) error {
	switch code {
	case connect.CodeNotFound:
		return ErrNotFound
	case connect.CodeAlreadyExists:
		return ErrExists
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return ErrInvalid
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		return ErrAccessDenied
	}
	return nil
}

// wrap turns an error of a call into the client's errors: the caller's own
// cancellation stays itself; transport failures (the agent does not answer
// or went away) become UnavailableError; the agent's answers RemoteError.
// The agent never answers with Unavailable, Unknown, DeadlineExceeded or
// Canceled: those codes come from the client's side of the connection.
func (c *Client) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("agent %s: %w", op, context.Cause(ctx))
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return fmt.Errorf("agent %s: %w", op, ue)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeCanceled:
			return fmt.Errorf("agent %s: %w", op, &UnavailableError{Socket: c.socket, Err: err})
		}
		return fmt.Errorf("agent %s: %w", op, &RemoteError{Code: ce.Code().String(), Message: ce.Message(), kind: kindOf(ce.Code())})
	}
	return fmt.Errorf("agent %s: %w", op, &UnavailableError{Socket: c.socket, Err: err})
}
