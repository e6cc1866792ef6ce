package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/agent/internal/spec/filesystem/filesystemconnect"
	"github.com/kindling-vm/kindling/agent/internal/spec/process/processconnect"
)

// Defaults of Config.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
)

// accessTokenHeader carries the access token (E2B's).
const accessTokenHeader = "X-Access-Token"

// baseURL is the URL the client's requests are addressed to; the transport
// ignores the host and dials the socket.
const baseURL = "http://agent"

// Config says how to reach an agent.
type Config struct {
	// VsockPath is the sandbox's Firecracker vsock Unix socket (the vsock
	// device's uds_path): the client dials it and asks Firecracker, with
	// the hybrid-vsock handshake, for the guest's Port.
	VsockPath string
	// SocketPath is a plain Unix socket the agent listens on itself (an
	// agent run on the host with --listen unix:PATH). Set exactly one of
	// VsockPath and SocketPath.
	SocketPath string
	// Port is the guest's vsock port; 0 means Port.
	Port uint32
	// AccessToken is sent with every request (X-Access-Token). Init
	// replaces it with the token it sets.
	AccessToken string
	// DialTimeout bounds connecting and the vsock handshake; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds the wait for the agent's first answer to a
	// request (response headers; a stream's first event) and whole calls
	// whose context has no deadline; 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.VsockPath == "" && c.SocketPath == "":
		return fmt.Errorf("agent config: set VsockPath (a sandbox's vsock socket) or SocketPath (an agent on the host): %w", ErrInvalid)
	case c.VsockPath != "" && c.SocketPath != "":
		return fmt.Errorf("agent config: VsockPath %q and SocketPath %q both set; set one: %w", c.VsockPath, c.SocketPath, ErrInvalid)
	case len(c.VsockPath) > 107 || len(c.SocketPath) > 107:
		return fmt.Errorf("agent config: socket path longer than 107 bytes (the Unix socket limit): %w", ErrInvalid)
	case c.DialTimeout < 0 || c.RequestTimeout < 0:
		return fmt.Errorf("agent config: negative timeout: %w", ErrInvalid)
	}
	return nil
}

// Client talks to one agent. It is safe for concurrent use; each
// concurrent call uses a connection of its own, kept for reuse.
type Client struct {
	cfg    Config
	socket string // the path dialled, for errors
	hc     *http.Client
	tr     *http.Transport
	proc   processconnect.ProcessClient
	fs     filesystemconnect.FilesystemClient

	mu    sync.Mutex // guards token
	token string
}

// New returns a client for the agent cfg names. It does not connect: the
// first call does (Dial checks the agent answers).
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		cfg.Port = Port
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	c := &Client{cfg: cfg, socket: cfg.SocketPath, token: cfg.AccessToken}
	if cfg.VsockPath != "" {
		c.socket = cfg.VsockPath
	}
	c.tr = &http.Transport{
		DialContext:           c.dial,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	c.hc = &http.Client{Transport: c.tr}
	opts := connect.WithClientOptions(connect.WithInterceptors(tokenInterceptor{c}))
	c.proc = processconnect.NewProcessClient(c.hc, baseURL, opts)
	c.fs = filesystemconnect.NewFilesystemClient(c.hc, baseURL, opts)
	return c, nil
}

// Dial returns a client after checking that the agent answers /health
// within the dial and request timeouts.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Health(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the client's idle connections. Calls in flight go on.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Socket returns the socket the client dials.
func (c *Client) Socket() string { return c.socket }

func (c *Client) accessToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

func (c *Client) setAccessToken(t string) {
	c.mu.Lock()
	c.token = t
	c.mu.Unlock()
}

// dial connects to the agent: the Unix socket, then, through Firecracker's
// hybrid vsock, "CONNECT <port>\n" answered by "OK <host port>\n".
func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, &UnavailableError{Socket: c.socket, Err: err}
	}
	if c.cfg.VsockPath == "" {
		return conn, nil
	}
	if err := handshake(ctx, conn, c.cfg.Port); err != nil {
		_ = conn.Close()
		if ctx.Err() != nil && errors.Is(err, errHandshakeTimeout) {
			err = fmt.Errorf("vsock port %d: no answer to CONNECT within %v", c.cfg.Port, c.cfg.DialTimeout)
		}
		return nil, &UnavailableError{Socket: c.socket, Err: err}
	}
	return conn, nil
}

var errHandshakeTimeout = errors.New("handshake timed out")

// VsockConnect makes Firecracker's hybrid-vsock handshake on conn, a
// connection to a VM's vsock socket, for the guest's port. The answer is
// read a byte at a time, so no byte of the guest's stream is consumed. A
// port nothing listens on in the guest gives an error matching
// ErrNoListener; ctx bounds the handshake.
func VsockConnect(ctx context.Context, conn net.Conn, port uint32) error {
	err := handshake(ctx, conn, port)
	if errors.Is(err, errHandshakeTimeout) {
		err = fmt.Errorf("vsock port %d: no answer to CONNECT: %w", port, context.DeadlineExceeded)
	}
	return err
}

// handshake asks Firecracker for a connection to the guest's port. It
// reads the answer a byte at a time so as not to consume guest data.
func handshake(ctx context.Context, conn net.Conn, port uint32) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return handshakeErr(port, err)
	}
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := conn.Read(b); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("vsock port %d: connection closed by Firecracker: %w", port, ErrNoListener)
			}
			return handshakeErr(port, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if !stop() {
		return errHandshakeTimeout
	}
	f := strings.Fields(string(line))
	if len(f) != 2 || f[0] != "OK" {
		return fmt.Errorf("vsock port %d: unexpected handshake answer %q", port, line)
	}
	if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
		return fmt.Errorf("vsock port %d: unexpected handshake answer %q", port, line)
	}
	return nil
}

func handshakeErr(port uint32, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errHandshakeTimeout
	}
	return fmt.Errorf("vsock port %d: handshake: %w", port, err)
}

// tokenInterceptor adds the access token to every Connect call.
type tokenInterceptor struct{ c *Client }

func (t tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if tok := t.c.accessToken(); tok != "" {
			req.Header().Set(accessTokenHeader, tok)
		}
		return next(ctx, req)
	}
}

func (t tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if tok := t.c.accessToken(); tok != "" {
			conn.RequestHeader().Set(accessTokenHeader, tok)
		}
		return conn
	}
}

func (t tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// withTimeout gives ctx the request timeout if it has no deadline. When
// that timeout ends the call, the context's cause is an UnavailableError
// naming the socket.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, c.cfg.RequestTimeout,
		&UnavailableError{Socket: c.socket, Err: fmt.Errorf("no answer within %v", c.cfg.RequestTimeout)})
}

// do sends a plain HTTP request with the access token and returns the
// response if its status is 2xx; other statuses become errors.
func (c *Client) do(ctx context.Context, op string, req *http.Request) (*http.Response, error) {
	if tok := c.accessToken(); tok != "" {
		req.Header.Set(accessTokenHeader, tok)
	}
	res, err := c.hc.Do(req.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("agent %s: %w", op, context.Cause(ctx))
		}
		var ue *UnavailableError
		if errors.As(err, &ue) {
			return nil, fmt.Errorf("agent %s: %w", op, ue)
		}
		return nil, fmt.Errorf("agent %s: %w", op, &UnavailableError{Socket: c.socket, Err: err})
	}
	if res.StatusCode/100 == 2 {
		return res, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var body struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &body) == nil && body.Message != "" {
		msg = body.Message
	}
	var kind error
	switch res.StatusCode {
	case http.StatusNotFound:
		kind = ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		kind = ErrAccessDenied
	case http.StatusBadRequest:
		kind = ErrInvalid
	}
	return nil, fmt.Errorf("agent %s: %w", op, &RemoteError{Code: strconv.Itoa(res.StatusCode), Message: msg, kind: kind})
}

// Health checks that the agent answers.
func (c *Client) Health(ctx context.Context) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	req, _ := http.NewRequest(http.MethodGet, baseURL+"/health", nil)
	res, err := c.do(ctx, "health", req)
	if err != nil {
		return err
	}
	_ = res.Body.Close()
	return nil
}

// Shutdown asks the agent to power the guest off (an agent that is not the
// guest's init exits instead).
func (c *Client) Shutdown(ctx context.Context) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/kindling/shutdown", nil)
	res, err := c.do(ctx, "shutdown", req)
	if err != nil {
		return err
	}
	_ = res.Body.Close()
	return nil
}
