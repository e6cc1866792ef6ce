package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ForwardPort is the vsock port on which the agent forwards connections to
// TCP ports of the guest's loopback: the host connects, asks for a port
// with RequestForward, and the connection then carries that port's bytes.
// It needs no access token: only the host reaches the guest's vsock.
const ForwardPort = 49984

// The forward protocol, after the vsock handshake: the host sends
// "FORWARD <port>\n"; the agent connects to 127.0.0.1:<port> (else
// [::1]:<port>) in the guest and answers "OK\n", or "ERR <why>\n" and
// closes. Then both directions are copied until either side ends.
const (
	forwardVerb = "FORWARD"
	forwardOK   = "OK"
	forwardErr  = "ERR"
	// maxForwardLine bounds a line of the forward protocol.
	maxForwardLine = 512
)

// ErrPortClosed: nothing listens on the port asked for in the guest.
var ErrPortClosed = errors.New("nothing listens on the port in the guest")

// RequestForward asks the agent at the other end of conn (connected to
// ForwardPort) for TCP port on the guest's loopback. On success conn
// carries that port's bytes. A port nothing listens on gives an error
// matching ErrPortClosed. The answer is read a byte at a time, so that no
// byte of the port's stream is consumed.
func RequestForward(ctx context.Context, conn net.Conn, port uint16) error {
	if port == 0 {
		return fmt.Errorf("forward port 0: give a port from 1 to 65535: %w", ErrInvalid)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer func() { _ = conn.SetDeadline(time.Time{}) }()
	}
	if _, err := fmt.Fprintf(conn, "%s %d\n", forwardVerb, port); err != nil {
		return fmt.Errorf("forward port %d: %w", port, err)
	}
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := conn.Read(b); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("forward port %d: the agent's answer: %w", port, err)
		}
		if b[0] == '\n' {
			break
		}
		if line = append(line, b[0]); len(line) > maxForwardLine {
			return fmt.Errorf("forward port %d: the agent's answer is too long", port)
		}
	}
	ans := string(line)
	switch {
	case ans == forwardOK:
		return nil
	case strings.HasPrefix(ans, forwardErr+" "):
		return fmt.Errorf("forward port %d: %s: %w", port, strings.TrimPrefix(ans, forwardErr+" "), ErrPortClosed)
	}
	return fmt.Errorf("forward port %d: unexpected answer %q", port, ans)
}

// ReadForwardRequest reads a host's "FORWARD <port>\n" from r (the agent's
// side of RequestForward).
func ReadForwardRequest(r *bufio.Reader) (uint16, error) {
	var line []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("read forward request: %w", err)
		}
		if b == '\n' {
			break
		}
		if line = append(line, b); len(line) > maxForwardLine {
			return 0, fmt.Errorf("forward request too long: %w", ErrInvalid)
		}
	}
	ps, ok := strings.CutPrefix(string(line), forwardVerb+" ")
	n, err := strconv.ParseUint(ps, 10, 16)
	if !ok || err != nil || n == 0 {
		return 0, fmt.Errorf("forward request %q: want %q and a port from 1 to 65535: %w", line, forwardVerb+" PORT", ErrInvalid)
	}
	return uint16(n), nil
}

// WriteForwardAnswer writes the agent's answer to a forward request: OK for
// a nil err, else the error.
func WriteForwardAnswer(w io.Writer, err error) error {
	if err == nil {
		_, werr := fmt.Fprintf(w, "%s\n", forwardOK)
		return werr
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(msg) > maxForwardLine-8 {
		msg = msg[:maxForwardLine-8]
	}
	_, werr := fmt.Fprintf(w, "%s %s\n", forwardErr, msg)
	return werr
}
