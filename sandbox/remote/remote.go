// Package remote is the Go client of a kindling server (kindlingd): a
// sandbox.Controller (and sandbox.Hotplugger and sandbox.EgressSetter)
// whose calls go over the server's native API, so code written against
// sandbox.Controller runs the same against the local runtime and a server.
//
// Errors match the same sentinels as the local runtime's (sandbox.ErrNotFound,
// ErrExists, ErrInvalid, ErrConflict, ErrNotSupported, ErrUnavailable,
// ErrCorrupt): the server sends each kind as a Connect code and the client
// maps it back. A server that cannot be reached gives ErrUnavailable.
// Paths in requests (snapshot directories, drives) are paths on the
// server's host.
//
// It is imported by the kindling CLI (--host) and by programs that drive a
// server; it imports the native API's generated code and package sandbox.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/api/kindling/v1/kindlingv1connect"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
)

// EnvHost names the environment variable the CLI reads a server's address
// from (as its --host flag).
const EnvHost = "KINDLING_HOST"

// Config says how to reach a server.
type Config struct {
	// Host is the server's address: unix:///path/to/kindlingd.sock (or a
	// bare absolute path), http://host:port (loopback servers) or
	// https://host:port.
	Host string
	// APIKey is sent with every call (Authorization: Bearer); servers need
	// one on TCP listeners.
	APIKey string
	// TLS configures https hosts (nil: the system's roots).
	TLS *tls.Config
	// DialTimeout bounds connecting (default 5 s).
	DialTimeout time.Duration
	// MaxIdleConns is how many idle connections to the server the client
	// keeps for its next calls (default 16). A program making many calls
	// at once wants about as many: a call that finds none idle connects
	// anew, and one that ends with the pool full closes its connection.
	MaxIdleConns int
}

// Client is a sandbox.Controller served by a kindling server, with the
// guest calls (sandbox.Guest: exec and files). It is safe for concurrent
// use.
type Client struct {
	tr    *http.Transport
	sb    kindlingv1connect.SandboxServiceClient
	tpl   kindlingv1connect.TemplateServiceClient
	guest kindlingv1connect.GuestServiceClient
	pool  kindlingv1connect.PoolServiceClient
	img   kindlingv1connect.ImageServiceClient
	host  string
}

var (
	_ sandbox.Controller = (*Client)(nil)
	_ sandbox.Hotplugger = (*Client)(nil)
)

// New returns a client for the server cfg names. It does not connect: the
// first call does.
func New(cfg Config) (*Client, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 16
	}
	base, dial, err := parseHost(cfg.Host, cfg.DialTimeout)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     cfg.TLS,
		MaxIdleConnsPerHost: cfg.MaxIdleConns,
		IdleConnTimeout:     60 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	hc := &http.Client{Transport: tr}
	var opts []connect.ClientOption
	if cfg.APIKey != "" {
		opts = append(opts, connect.WithInterceptors(keyInterceptor(cfg.APIKey)))
	}
	return &Client{
		tr:    tr,
		sb:    kindlingv1connect.NewSandboxServiceClient(hc, base, opts...),
		tpl:   kindlingv1connect.NewTemplateServiceClient(hc, base, opts...),
		guest: kindlingv1connect.NewGuestServiceClient(hc, base, opts...),
		pool:  kindlingv1connect.NewPoolServiceClient(hc, base, opts...),
		img:   kindlingv1connect.NewImageServiceClient(hc, base, opts...),
		host:  cfg.Host,
	}, nil
}

// parseHost reads a server address into the base URL of its API and the
// dialer that reaches it.
func parseHost(host string, timeout time.Duration) (string, func(context.Context, string, string) (net.Conn, error), error) {
	d := &net.Dialer{Timeout: timeout}
	bad := func(why string) error {
		return fmt.Errorf("server address %q: %s (give unix:///run/kindling/kindlingd.sock, http://127.0.0.1:PORT or https://HOST:PORT): %w", host, why, sandbox.ErrInvalid)
	}
	if strings.HasPrefix(host, "/") {
		host = "unix://" + host
	}
	u, err := url.Parse(host)
	if err != nil || host == "" {
		return "", nil, bad("not a URL")
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" || u.Host != "" {
			return "", nil, bad("a unix address needs an absolute path")
		}
		if len(path) > 107 {
			return "", nil, bad("socket path longer than 107 bytes")
		}
		return "http://kindlingd", func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}, nil
	case "http", "https":
		if u.Host == "" || (u.Path != "" && u.Path != "/") {
			return "", nil, bad("give only a host and port")
		}
		return u.Scheme + "://" + u.Host, d.DialContext, nil
	}
	return "", nil, bad("unknown scheme")
}

// Close closes the client's idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// keyInterceptor sends the API key with every call.
type keyInterceptor string

func (k keyInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(k))
		return next(ctx, req)
	}
}

func (k keyInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(k))
		return conn
	}
}

func (k keyInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// call runs one unary RPC and maps its error back to kindling's kinds.
func call[Req, Res any](ctx context.Context, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), req *Req) (*Res, error) {
	res, err := fn(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, apiconv.FromConnect(err)
	}
	return res.Msg, nil
}

// Create records a new sandbox on the server. spec's Memory and NetFlags
// (a config file's spellings) must have been parsed into MemoryMiB and Net.
func (c *Client) Create(ctx context.Context, spec sandbox.Spec, o sandbox.CreateOptions) (sandbox.Info, error) {
	res, err := call(ctx, c.sb.Create, &pb.CreateRequest{Spec: apiconv.SpecToPB(spec), AutoRemove: o.AutoRemove})
	if err != nil {
		return sandbox.Info{}, err
	}
	return apiconv.InfoFromPB(res.GetSandbox()), nil
}

// Start boots a created (or exited) sandbox.
func (c *Client) Start(ctx context.Context, id string) (sandbox.Info, error) {
	res, err := call(ctx, c.sb.Start, &pb.IDRequest{Id: id})
	if err != nil {
		return sandbox.Info{}, err
	}
	return apiconv.InfoFromPB(res.GetSandbox()), nil
}

// Stop stops a sandbox's VM within ctx's deadline.
func (c *Client) Stop(ctx context.Context, id string, opts ...sandbox.StopOption) error {
	var o sandbox.StopOptions
	for _, opt := range opts {
		opt(&o)
	}
	req := &pb.StopRequest{Id: id}
	if o.Grace != nil {
		ms := o.Grace.Milliseconds()
		req.GraceMs = &ms
	}
	_, err := call(ctx, c.sb.Stop, req)
	return err
}

// Kill ends a sandbox's VM at once.
func (c *Client) Kill(ctx context.Context, id string) error {
	_, err := call(ctx, c.sb.Kill, &pb.IDRequest{Id: id})
	return err
}

// Remove deletes a sandbox; a running one only with force.
func (c *Client) Remove(ctx context.Context, id string, force bool) error {
	_, err := call(ctx, c.sb.Remove, &pb.RemoveRequest{Id: id, Force: force})
	return err
}

// Inspect describes one sandbox.
func (c *Client) Inspect(ctx context.Context, id string) (sandbox.Info, error) {
	res, err := call(ctx, c.sb.Inspect, &pb.IDRequest{Id: id})
	if err != nil {
		return sandbox.Info{}, err
	}
	return apiconv.InfoFromPB(res.GetSandbox()), nil
}

// List describes the sandboxes o selects.
func (c *Client) List(ctx context.Context, o sandbox.ListOptions) ([]sandbox.Info, error) {
	res, err := call(ctx, c.sb.List, &pb.ListRequest{Labels: o.Labels})
	if err != nil {
		return nil, err
	}
	infos := make([]sandbox.Info, 0, len(res.GetSandboxes()))
	for _, s := range res.GetSandboxes() {
		infos = append(infos, apiconv.InfoFromPB(s))
	}
	return infos, nil
}

// Wait waits until the sandbox's VM has exited.
func (c *Client) Wait(ctx context.Context, id string) (*sandbox.Exit, error) {
	res, err := call(ctx, c.sb.Wait, &pb.IDRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return apiconv.ExitFromPB(res.GetExit()), nil
}

// Pause stops the guest's vCPUs.
func (c *Client) Pause(ctx context.Context, id string) error {
	_, err := call(ctx, c.sb.Pause, &pb.IDRequest{Id: id})
	return err
}

// Resume restarts the guest's vCPUs.
func (c *Client) Resume(ctx context.Context, id string) error {
	_, err := call(ctx, c.sb.Resume, &pb.IDRequest{Id: id})
	return err
}

// Snapshot writes a snapshot of the sandbox into dir, on the server's host.
func (c *Client) Snapshot(ctx context.Context, id, dir string, o sandbox.SnapshotOptions) (sandbox.SnapshotInfo, error) {
	res, err := call(ctx, c.sb.Snapshot, &pb.SnapshotRequest{Id: id, Dir: dir, Own: o.Own, LeavePaused: o.LeavePaused})
	if err != nil {
		return sandbox.SnapshotInfo{}, err
	}
	return apiconv.SnapshotFromPB(res), nil
}

// Restore starts a new sandbox from the snapshot in dir, on the server's
// host.
func (c *Client) Restore(ctx context.Context, dir string, o sandbox.RestoreOptions) (sandbox.Info, error) {
	req := &pb.RestoreRequest{Dir: dir, Id: o.ID, Net: apiconv.NetsToPB(o.Net),
		AutoRemove: o.AutoRemove, Firecracker: o.Firecracker, CopyOwnedDrives: o.CopyOwnedDrives, Labels: o.Labels,
		Jailer: o.Jailer, NoJailer: o.NoJailer}
	if o.Ports != nil {
		req.Ports = &pb.PortList{Ports: o.Ports}
	}
	res, err := call(ctx, c.sb.Restore, req)
	if err != nil {
		return sandbox.Info{}, err
	}
	return apiconv.InfoFromPB(res.GetSandbox()), nil
}

// Console reads what the guest wrote on its serial console.
func (c *Client) Console(ctx context.Context, id string, o sandbox.LogOptions) (io.ReadCloser, error) {
	return c.openLog(ctx, c.sb.Console, id, o)
}

// Logs reads the VMM's own log.
func (c *Client) Logs(ctx context.Context, id string, o sandbox.LogOptions) (io.ReadCloser, error) {
	return c.openLog(ctx, c.sb.Logs, id, o)
}

func (c *Client) openLog(ctx context.Context, fn func(context.Context, *connect.Request[pb.LogRequest]) (*connect.ServerStreamForClient[pb.LogChunk], error), id string, o sandbox.LogOptions) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := fn(ctx, connect.NewRequest(&pb.LogRequest{Id: id, Follow: o.Follow}))
	if err != nil {
		cancel()
		return nil, apiconv.FromConnect(err)
	}
	// The first message (or the end) says whether the sandbox exists, so
	// a missing one fails here, as with the local runtime.
	r := &logReader{stream: stream, cancel: cancel}
	if !stream.Receive() {
		err := stream.Err()
		_ = stream.Close()
		cancel()
		if err != nil {
			return nil, apiconv.FromConnect(err)
		}
		r.done = true
		return r, nil
	}
	r.buf = stream.Msg().GetData()
	return r, nil
}

// logReader reads a streamed log.
type logReader struct {
	stream *connect.ServerStreamForClient[pb.LogChunk]
	cancel context.CancelFunc
	buf    []byte
	done   bool
}

func (r *logReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if !r.stream.Receive() {
			r.done = true
			if err := r.stream.Err(); err != nil {
				return 0, apiconv.FromConnect(err)
			}
			return 0, io.EOF
		}
		r.buf = r.stream.Msg().GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *logReader) Close() error {
	r.cancel()
	err := r.stream.Close()
	if errors.Is(err, context.Canceled) || connect.CodeOf(err) == connect.CodeCanceled {
		return nil
	}
	return apiconv.FromConnect(err)
}

// AttachDrive puts a drive (a path on the server's host) into a free
// hotplug slot.
func (c *Client) AttachDrive(ctx context.Context, id string, d sandbox.Disk) (string, error) {
	res, err := call(ctx, c.sb.AttachDrive, &pb.AttachDriveRequest{Id: id, Disk: &pb.Disk{Path: d.Path, ReadOnly: d.ReadOnly}})
	if err != nil {
		return "", err
	}
	return res.GetSlot(), nil
}

// DetachDrive empties a hotplug slot.
func (c *Client) DetachDrive(ctx context.Context, id, slot string) error {
	_, err := call(ctx, c.sb.DetachDrive, &pb.DetachDriveRequest{Id: id, Slot: slot})
	return err
}

// SetTimeout gives a sandbox a lifetime: after d the server kills and
// removes it, or, with pause, pauses it. Zero clears the lifetime.
func (c *Client) SetTimeout(ctx context.Context, id string, d time.Duration, pause bool) error {
	_, err := call(ctx, c.sb.SetTimeout, &pb.SetTimeoutRequest{Id: id, TimeoutMs: d.Milliseconds(), Pause: pause})
	return err
}
