package fcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const (
	// MaxSocketPath is the longest Unix socket path (in bytes) the kernel's
	// sockaddr_un can hold with its terminating NUL.
	MaxSocketPath = 107
	// MaxConns is the most API connections Firecracker serves at once; the
	// client never opens more.
	MaxConns = 10
	// DefaultTimeout bounds a request whose context has no deadline.
	DefaultTimeout = 10 * time.Second
	// maxBody bounds a response body read into memory.
	maxBody = 8 << 20
)

// Client talks to one Firecracker process over its API socket. It is safe
// for concurrent use.
type Client struct {
	socket    string
	timeout   time.Duration
	logger    *slog.Logger
	transport *http.Transport
	http      *http.Client

	mu sync.Mutex // guards version, versionErr and probing
	// version is the probed (or given) release; zero until known.
	version Version
	// versionErr is the cached *UnsupportedVersionError of the release.
	versionErr error
	// probing is closed when the version probe in flight ends; nil when
	// none is.
	probing chan struct{}
}

// Option configures a Client.
type Option func(*options)

type options struct {
	timeout time.Duration
	logger  *slog.Logger
	wrap    func(http.RoundTripper) http.RoundTripper
	version Version
}

// WithTimeout sets the deadline given to a request whose context has none
// (DefaultTimeout otherwise). A value ≤ 0 keeps the default.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithLogger makes the client write one debug line per request to l. Errors
// are returned, never logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithRoundTripper wraps the client's Unix-socket transport, for example to
// record or delay requests in tests.
func WithRoundTripper(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(o *options) { o.wrap = wrap }
}

// WithVersion tells the client which release it talks to, so that it never
// probes (for example when the release was recorded earlier). A zero
// Version keeps probing.
func WithVersion(ver Version) Option {
	return func(o *options) { o.version = ver }
}

// New returns a client for the Firecracker API socket at socketPath. It does
// not connect: the first request does. A path longer than MaxSocketPath bytes
// is rejected with an error matching ErrSocketPathTooLong.
func New(socketPath string, opts ...Option) (*Client, error) {
	if socketPath == "" {
		return nil, errors.New("new firecracker api client: empty socket path")
	}
	if len(socketPath) > MaxSocketPath {
		return nil, fmt.Errorf("new firecracker api client: socket %q is %d bytes, over the %d a unix socket path can hold: %w",
			socketPath, len(socketPath), MaxSocketPath, ErrSocketPathTooLong)
	}
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	c := &Client{socket: socketPath, timeout: o.timeout, logger: o.logger}
	c.transport = &http.Transport{
		DialContext:         c.dial,
		MaxConnsPerHost:     MaxConns,
		MaxIdleConns:        MaxConns,
		MaxIdleConnsPerHost: MaxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	var rt http.RoundTripper = c.transport
	if o.wrap != nil {
		rt = o.wrap(rt)
	}
	c.http = &http.Client{Transport: rt}
	if !o.version.IsZero() {
		c.version = o.version
		c.versionErr = checkSupported(o.version)
	}
	return c, nil
}

// SocketPath returns the API socket the client talks to.
func (c *Client) SocketPath() string { return c.socket }

// Close releases idle connections. The client stays usable: a later request
// dials again.
func (c *Client) Close() error {
	c.transport.CloseIdleConnections()
	return nil
}

// dial connects to the API socket, giving up when ctx ends.
func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", c.socket)
}

// call is one request: route is the spec's path template ("/drives/{id}"),
// id fills {id} (escaped), body (if not nil) is sent as JSON, out (if not
// nil) receives the decoded answer.
type call struct {
	method string
	route  string
	id     string
	body   any
	out    any
}

func (r call) path() string {
	if r.id == "" {
		return r.route
	}
	return strings.Replace(r.route, "{id}", url.PathEscape(r.id), 1)
}

// do sends r after checking the running release (probing it if needed)
// has the endpoint. The body must already be shaped.
func (c *Client) do(ctx context.Context, r call) error {
	if strings.Contains(r.route, "{id}") && r.id == "" {
		return fmt.Errorf("%s %s: %w", r.method, r.route, ErrEmptyID)
	}
	if r.route != "/" && r.route != "/version" {
		// Every request but the probes needs a known, supported release.
		ver, err := c.Version(ctx)
		if err != nil {
			return err
		}
		if err := checkEndpoint(ver, r.method, r.route); err != nil {
			return err
		}
	}
	return c.send(ctx, r.method, r.path(), r.body, r.out)
}

// send performs one HTTP exchange.
func (c *Client) send(ctx context.Context, method, path string, body, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		reader = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, reader)
	if err != nil {
		return fmt.Errorf("%s %s: build request: %w", method, path, err)
	}
	req.Host = "localhost"
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return &TransportError{Method: method, Path: path, Socket: c.socket, Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return &TransportError{Method: method, Path: path, Socket: c.socket, Err: fmt.Errorf("read response: %w", err)}
	}
	if c.logger != nil {
		c.logger.LogAttrs(ctx, slog.LevelDebug, "firecracker api request",
			slog.String("method", method), slog.String("path", path),
			slog.Int("status", resp.StatusCode), slog.Duration("took", time.Since(start)))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeAPIError(method, path, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := decodeBody(data, out); err != nil {
		return &DecodeError{Method: method, Path: path, Err: err}
	}
	return nil
}

// decodeBody decodes a JSON answer into out. It never panics.
func decodeBody(data []byte, out any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("empty body")
	}
	return json.Unmarshal(data, out)
}

// unwrapURLError drops net/http's *url.Error layer, whose text repeats the
// method and URL that TransportError already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
