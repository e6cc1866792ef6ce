package fcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

func TestNewSocketPath(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		wantErr error
	}{
		{"107 bytes accepted", "/" + strings.Repeat("a", 106), nil},
		{"108 bytes rejected", "/" + strings.Repeat("a", 107), ErrSocketPathTooLong},
		{"empty rejected", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.path)
			switch {
			case tt.path == "":
				if err == nil {
					t.Fatal("New(\"\") succeeded")
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("New = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "108 bytes") {
					t.Errorf("error %q does not give the length", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

func TestVersionProbe(t *testing.T) {
	tests := []struct {
		name     string
		emulate  string
		want     Version
		wantErr  error
		wantText string
	}{
		{name: "from /version", emulate: "1.14.2", want: v(1, 14, 2)},
		{name: "dev build", emulate: "1.17.0-dev", want: Version{Major: 1, Minor: 17, Pre: "dev"}},
		{name: "pre-1.0 via GET /", emulate: "0.25.0", want: v(0, 25, 0), wantErr: ErrUnsupportedVersion,
			wantText: "unsupported Firecracker version 0.25.0: kindling needs 1.0 or newer"},
		{name: "garbage version", emulate: "banana", wantErr: nil, wantText: "probe firecracker version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, tt.emulate, nil)
			c := srv.client(t)
			for range 3 {
				got, err := c.Version(t.Context())
				if tt.wantText != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantText) {
						t.Fatalf("Version = %v, %v; want error %q", got, err, tt.wantText)
					}
					if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
						t.Fatalf("Version error %v does not match %v", err, tt.wantErr)
					}
				} else if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("Version = %v, want %v", got, tt.want)
				}
			}
			if tt.want.IsZero() {
				return
			}
			if n := srv.count(http.MethodGet, "/version"); n != 1 {
				t.Errorf("GET /version sent %d times, want 1 (cached)", n)
			}
		})
	}
}

func TestVersionProbeFallsBackOn404(t *testing.T) {
	srv := newTestServer(t, "1.3.1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			writeJSON(w, http.StatusOK, map[string]string{"vmm_version": "1.3.1", "state": "Running"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv.version = "" // /version answers 400
	c := srv.client(t)
	got, err := c.Version(t.Context())
	if err != nil || got != v(1, 3, 1) {
		t.Fatalf("Version = %v, %v; want 1.3.1", got, err)
	}
}

func TestUnsupportedVersionRefusesRequests(t *testing.T) {
	tests := map[string]func(context.Context, *Client) error{
		"put machine config": func(ctx context.Context, c *Client) error {
			return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 128})
		},
		"pause":          func(ctx context.Context, c *Client) error { return c.Pause(ctx) },
		"instance start": func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) },
		"get balloon":    func(ctx context.Context, c *Client) error { _, err := c.GetBalloon(ctx); return err },
		"load snapshot": func(ctx context.Context, c *Client) error {
			return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemBackend: MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"}})
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newTestServer(t, "0.25.0", nil)
			c := srv.client(t)
			err := call(t.Context(), c)
			var uve *UnsupportedVersionError
			if !errors.As(err, &uve) || uve.Version != v(0, 25, 0) {
				t.Fatalf("error = %v, want *UnsupportedVersionError for 0.25.0", err)
			}
			if reqs := srv.requests(); len(reqs) != 0 {
				t.Errorf("sent %v to an unsupported release", reqs)
			}
		})
	}
	t.Run("instance info still answers", func(t *testing.T) {
		srv := newTestServer(t, "0.25.0", nil)
		info, err := srv.client(t).GetInstanceInfo(t.Context())
		if err != nil || info.VMMVersion != "0.25.0" {
			t.Fatalf("GetInstanceInfo = %+v, %v", info, err)
		}
	})
}

func TestWithVersionSkipsProbe(t *testing.T) {
	srv := newTestServer(t, "1.14.2", nil)
	c := srv.client(t, WithVersion(v(1, 7, 0)))
	if err := c.PutSerial(t.Context(), SerialDevice{}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("PutSerial = %v, want ErrNotSupported for the given 1.7.0", err)
	}
	if n := srv.count(http.MethodGet, "/version"); n != 0 {
		t.Errorf("probed %d times despite WithVersion", n)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		call       func(context.Context, *Client) error
		wantText   string
		wantIs     error
		wantStatus int
	}{
		{
			name: "400 with fault message", status: 400, body: `{"fault_message":"The requested operation is not supported after starting the microVM."}`,
			call: func(ctx context.Context, c *Client) error {
				return c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/x"})
			},
			wantText: `put drive "rootfs": PUT /drives/rootfs: 400 Bad Request: The requested operation is not supported after starting the microVM.`,
			wantIs:   ErrBadRequest, wantStatus: 400,
		},
		{
			name: "404", status: 404, body: `{"fault_message":"nope"}`,
			call:     func(ctx context.Context, c *Client) error { _, err := c.GetBalloon(ctx); return err },
			wantText: "get balloon: GET /balloon: 404 Not Found: nope", wantIs: ErrNotFound, wantStatus: 404,
		},
		{
			name: "500 with text body", status: 500, body: "boom\n",
			call:     func(ctx context.Context, c *Client) error { return c.Resume(ctx) },
			wantText: "set vm state Resumed: PATCH /vm: 500 Internal Server Error: boom", wantStatus: 500,
		},
		{
			name: "503 too many connections", status: 503, body: `{"fault_message":"Too many open connections"}`,
			call:     func(ctx context.Context, c *Client) error { _, err := c.GetInstanceInfo(ctx); return err },
			wantText: "get instance info: GET /: 503 Service Unavailable: Too many open connections", wantIs: ErrBusy, wantStatus: 503,
		},
		{
			name: "empty error body", status: 400, body: "",
			call:     func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) },
			wantText: "action InstanceStart: PUT /actions: 400 Bad Request", wantIs: ErrBadRequest, wantStatus: 400,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, "1.14.2", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			})
			c := srv.client(t)
			err := tt.call(t.Context(), c)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error = %v, want *APIError", err)
			}
			if apiErr.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", apiErr.StatusCode, tt.wantStatus)
			}
			if err.Error() != tt.wantText {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.wantText)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not match %v", tt.wantIs)
			}
			if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotSupported) {
				t.Errorf("API error %v matches a transport or support sentinel", err)
			}
		})
	}
}

func TestDecodeErrorNamesPath(t *testing.T) {
	srv := newTestServer(t, "1.14.2", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"total_size_mib": "not a number"`))
	})
	c := srv.client(t)
	_, err := c.GetMemoryHotplug(t.Context())
	var de *DecodeError
	if !errors.As(err, &de) || !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("error = %v, want *DecodeError", err)
	}
	if de.Path != "/hotplug/memory" || !strings.Contains(err.Error(), "GET /hotplug/memory") {
		t.Errorf("error %q does not name the path", err)
	}
}

func TestTransportErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the socket path
		cause error
	}{
		{
			name:  "no socket file",
			setup: func(t *testing.T) string { return filepath.Join(shortDir(t), "missing.sock") },
			cause: fs.ErrNotExist,
		},
		{
			name: "socket file without listener (dead VMM)",
			setup: func(t *testing.T) string {
				p := filepath.Join(shortDir(t), "dead.sock")
				ln, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				ln.(*net.UnixListener).SetUnlinkOnClose(false)
				ln.Close()
				return p
			},
			cause: syscall.ECONNREFUSED,
		},
		{
			name: "connection closed mid-request",
			setup: func(t *testing.T) string {
				srv := newTestServer(t, "1.14.2", func(w http.ResponseWriter, r *http.Request) {
					conn, _, err := http.NewResponseController(w).Hijack()
					if err == nil {
						conn.Close()
					}
				})
				return srv.sock
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.setup(t), WithVersion(v(1, 14, 2)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Pause(t.Context())
			var te *TransportError
			if !errors.As(err, &te) || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("error = %v, want *TransportError", err)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("error %v does not wrap %v", err, tt.cause)
			}
			if errors.Is(err, ErrBadRequest) || errors.Is(err, ErrUnsupportedVersion) {
				t.Errorf("transport error %v matches another kind", err)
			}
		})
	}
}

func TestDialHonoursContext(t *testing.T) {
	srv := newTestServer(t, "1.14.2", nil)
	c := srv.client(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	conn, err := c.dial(ctx, "unix", "")
	if err == nil {
		conn.Close()
		t.Fatal("dial with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("dial error = %v, want context.Canceled", err)
	}
	if _, total := srv.connStats(); total != 0 {
		t.Errorf("server saw %d connections, want 0", total)
	}
}

func TestRequestDeadline(t *testing.T) {
	tests := []struct {
		name    string
		opts    []Option
		ctx     func(context.Context) (context.Context, context.CancelFunc)
		wantErr error
	}{
		{"caller deadline", nil, func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"caller cancel", nil, func(ctx context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"default timeout", []Option{WithTimeout(50 * time.Millisecond)}, func(ctx context.Context) (context.Context, context.CancelFunc) {
			return ctx, func() {}
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			srv := newTestServer(t, "1.14.2", func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			c := srv.client(t, append(tt.opts, WithVersion(v(1, 14, 2)))...)
			ctx, cancel := tt.ctx(t.Context())
			defer cancel()
			start := time.Now()
			err := c.Pause(ctx)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("request took %v after its deadline", took)
			}
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("error = %v, want %v as a transport error", err, tt.wantErr)
			}
		})
	}
}

func TestConnectionCap(t *testing.T) {
	srv := newTestServer(t, "1.14.2", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	c := srv.client(t, WithVersion(v(1, 14, 2)))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() { errs <- c.FlushMetrics(t.Context()) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	maxOpen, total := srv.connStats()
	if maxOpen > MaxConns {
		t.Errorf("server saw %d connections at once, want ≤ %d", maxOpen, MaxConns)
	}
	if maxOpen < 2 {
		t.Errorf("server saw %d connection at once: requests were not concurrent", maxOpen)
	}
	if total > MaxConns {
		t.Errorf("client opened %d connections in all, want ≤ %d (reuse)", total, MaxConns)
	}
}

func TestKeepAlive(t *testing.T) {
	srv := newTestServer(t, "1.14.2", nil)
	c := srv.client(t)
	for range 5 {
		if _, err := c.GetInstanceInfo(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.FlushMetrics(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if _, total := srv.connStats(); total != 1 {
		t.Errorf("server saw %d connections for sequential requests, want 1", total)
	}
	c.Close()
	if _, err := c.GetInstanceInfo(t.Context()); err != nil {
		t.Fatalf("request after Close: %v", err)
	}
	if _, total := srv.connStats(); total != 2 {
		t.Errorf("server saw %d connections after Close, want 2 (idle one released)", total)
	}
}

func TestLoggerOption(t *testing.T) {
	srv := newTestServer(t, "1.14.2", nil)
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := srv.client(t, WithLogger(l), WithVersion(v(1, 14, 2)))
	if err := c.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "method=PATCH") || !strings.Contains(out, "path=/vm") || !strings.Contains(out, "status=204") {
		t.Errorf("log = %q, want a debug line for PATCH /vm", out)
	}
}

func TestRoundTripperHook(t *testing.T) {
	srv := newTestServer(t, "1.14.2", nil)
	var n int
	var mu sync.Mutex // guards n
	c := srv.client(t, WithRoundTripper(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			n++
			mu.Unlock()
			return next.RoundTrip(r)
		})
	}))
	if err := c.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 2 {
		t.Errorf("hook saw %d requests, want 2 (probe and PATCH /vm)", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestVersionProbedOnceConcurrently(t *testing.T) {
	srv := newTestServer(t, "1.7.0", nil)
	srv.versionDelay = 50 * time.Millisecond
	c := srv.client(t)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if ver, err := c.Version(t.Context()); err != nil || ver != v(1, 7, 0) {
				t.Errorf("Version = %v, %v", ver, err)
			}
		})
	}
	wg.Wait()
	if n := srv.count(http.MethodGet, "/version"); n != 1 {
		t.Errorf("GET /version sent %d times by 20 concurrent callers, want 1", n)
	}
}

func TestTransportErrorWording(t *testing.T) {
	tests := []struct {
		cause error
		want  string
	}{
		{fs.ErrNotExist, "PATCH /vm: no API socket at /s (wrong path, or Firecracker not started): file does not exist"},
		{syscall.ECONNREFUSED, "PATCH /vm: nothing listens on /s (Firecracker has exited): connection refused"},
		{io.EOF, "PATCH /vm: connection to /s closed mid-request (Firecracker died?): EOF"},
		{context.DeadlineExceeded, "PATCH /vm: no answer from /s before the deadline: context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.cause.Error(), func(t *testing.T) {
			err := &TransportError{Method: "PATCH", Path: "/vm", Socket: "/s", Err: tt.cause}
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

// The client's errors match kindling's kinds; ErrUnavailable and
// ErrNotSupported are those sentinels.
func TestErrorKinds(t *testing.T) {
	if ErrUnavailable != errdefs.ErrUnavailable || ErrNotSupported != errdefs.ErrNotSupported {
		t.Error("ErrUnavailable / ErrNotSupported are not kindling's sentinels")
	}
	tests := []struct {
		name string
		err  error
		kind error
		not  error
	}{
		{"400", &APIError{StatusCode: 400}, errdefs.ErrInvalid, errdefs.ErrUnavailable},
		{"503", &APIError{StatusCode: 503}, errdefs.ErrConflict, errdefs.ErrUnavailable},
		{"404", &APIError{StatusCode: 404}, ErrNotFound, errdefs.ErrNotFound},
		{"transport", &TransportError{Err: errors.New("refused")}, errdefs.ErrUnavailable, errdefs.ErrInvalid},
		{"decode", &DecodeError{Err: errors.New("bad json")}, errdefs.ErrCorrupt, errdefs.ErrUnavailable},
		{"not supported", &NotSupportedError{Feature: "x"}, errdefs.ErrNotSupported, errdefs.ErrInvalid},
		{"socket path", ErrSocketPathTooLong, errdefs.ErrInvalid, errdefs.ErrNotFound},
		{"empty id", ErrEmptyID, errdefs.ErrInvalid, errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		err := fmt.Errorf("op: %w", tt.err)
		if !errors.Is(err, tt.kind) {
			t.Errorf("%s: %v does not match %v", tt.name, err, tt.kind)
		}
		if errors.Is(err, tt.not) {
			t.Errorf("%s: %v matches %v", tt.name, err, tt.not)
		}
	}
}
