package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/api/kindling/v1/kindlingv1connect"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// Limits of every listener.
const (
	// MaxBodyBytes bounds a control request's body (native and E2B APIs);
	// sandbox traffic is streamed without this bound.
	MaxBodyBytes = 1 << 20
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request's headers (slow clients, slowloris).
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes keep-alive connections idle for longer.
	IdleTimeout = 120 * time.Second
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes = 64 << 10
)

// Config is what a Server serves and how.
type Config struct {
	// Runtime is the runtime the server drives. Required.
	Runtime *sandbox.Runtime
	// Templates is the runtime's template store; nil serves no templates.
	Templates *template.Store
	// ImageDir is the directory of the image store (see docs/images.md),
	// image.StateRootDir in the runtime's state root for kindlingd; it is
	// opened (and made) on the first image call. Empty serves no images.
	ImageDir string
	// Agent is the guest agent binary injected into the root filesystems
	// of the images the server pulls or imports; empty builds them
	// without one (they cannot be run until imported again with one).
	Agent string
	// APIKeys are the keys a client may give (X-API-Key, or
	// Authorization: Bearer). The E2B API always needs one; the native API
	// needs one on listeners that are not Trusted. No keys: the E2B API
	// refuses every request, and the native API is served on trusted
	// listeners only.
	APIKeys []string
	// Domain is the domain of sandbox traffic: a request for host
	// <port>-<sandboxID>.<Domain> goes into that sandbox. Empty: only
	// requests with E2B's E2b-Sandbox-Id/-Port headers are routed.
	Domain string
	// Logger gets the server's log (default: discard).
	Logger *slog.Logger
	// Pools asks for warm pools: per template name, how many clones to keep
	// started and paused, so that a create from the template claims one
	// and only resumes it. Filled in the background.
	Pools map[string]int
	// PoolMemoryMiB bounds the guest memory of all the pools' ready clones
	// together; 0 for no bound.
	PoolMemoryMiB int
	// TracerProvider gets a span per request (default: no-op), the parent
	// of the runtime's spans when the runtime uses the same provider. A
	// W3C traceparent header on the request is the span's parent.
	TracerProvider trace.TracerProvider
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Runtime == nil {
		return fmt.Errorf("server config: no runtime: %w", sandbox.ErrInvalid)
	}
	for _, k := range c.APIKeys {
		if len(k) < 16 || strings.ContainsAny(k, " \t\r\n") {
			return fmt.Errorf("server config: an API key must be at least 16 characters without spaces: %w", sandbox.ErrInvalid)
		}
	}
	for name, n := range c.Pools {
		if n < 0 || n > MaxPoolSize || name == "" {
			return fmt.Errorf("server config: pool %q of %d clones: give a template name and 0 to %d: %w", name, n, MaxPoolSize, sandbox.ErrInvalid)
		}
	}
	if len(c.Pools) > 0 && c.Templates == nil {
		return fmt.Errorf("server config: warm pools need the template store: %w", sandbox.ErrInvalid)
	}
	if strings.HasPrefix(c.Domain, ".") || strings.ContainsAny(c.Domain, "/: ") {
		return fmt.Errorf("server config: domain %q: give a host name such as sandbox.example.com: %w", c.Domain, sandbox.ErrInvalid)
	}
	return nil
}

// Server serves one runtime. Create it with New, serve its Handler on
// listeners, and Close it after the HTTP servers have shut down.
type Server struct {
	rt      *sandbox.Runtime
	tpl     *template.Store
	images  imageConfig
	keys    [][]byte
	domain  string
	log     *slog.Logger
	leases  *leases
	proxy   *proxy
	metrics *metrics
	tracer  trace.Tracer
	pools   *pools
	execs   execs
	lister  lister
}

// New returns a server for cfg. It re-adopts what the state root holds: the
// leases of the sandboxes still there are re-armed, the others dropped.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{rt: cfg.Runtime, tpl: cfg.Templates, images: imageConfig{cfg.ImageDir, cfg.Agent}, domain: strings.ToLower(cfg.Domain), log: log}
	s.lister.rt = cfg.Runtime
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	s.tracer = tp.Tracer("github.com/kindling-vm/kindling/server")
	for _, k := range cfg.APIKeys {
		s.keys = append(s.keys, []byte(k))
	}
	var err error
	if s.leases, err = openLeases(cfg.Runtime, log); err != nil {
		return nil, err
	}
	s.proxy = newProxy(s)
	s.metrics = newMetrics(s)
	// Set before any lease is armed: an adopted lease may end at once.
	s.leases.onExpire = func(action string, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.metrics.expiries.WithLabelValues(action, result).Inc()
	}
	n, err := s.leases.adopt(ctx)
	if err != nil {
		s.leases.close()
		return nil, err
	}
	// A server killed during a template build left its builder running.
	if s.tpl != nil {
		removed, err := s.tpl.CleanBuilders(ctx)
		for _, id := range removed {
			log.Info("removed the builder of a template build that was killed", "sandbox", id)
		}
		if err != nil {
			log.Warn("clean template builders", "err", err)
		}
	}
	if s.pools, err = newPools(ctx, s, cfg.Pools, cfg.PoolMemoryMiB); err != nil {
		s.leases.close()
		return nil, err
	}
	log.Info("server ready", "root", cfg.Runtime.Root(), "leases", n)
	return s, nil
}

// Close stops the pools' fillers and the lease timers (waiting for work
// under way) and closes the proxy's idle connections. Sandboxes are left
// as they are, the pools' paused clones included.
func (s *Server) Close() {
	s.pools.close()
	s.leases.close()
	s.proxy.close()
}

// Handler returns the server's HTTP handler for one listener. Trusted
// listeners (a Unix socket whose file mode admits only the right users)
// serve the native API without an API key.
func (s *Server) Handler(trusted bool) http.Handler {
	mux := http.NewServeMux()
	// Small answers are not worth compressing (most go over a local socket).
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(MaxBodyBytes), connect.WithCompressMinBytes(32 << 10)}
	if !trusted {
		opts = append(opts, connect.WithInterceptors(keyInterceptor{s}))
	}
	if trusted || len(s.keys) > 0 {
		mux.Handle(kindlingv1connect.NewSandboxServiceHandler(native{s}, opts...))
		mux.Handle(kindlingv1connect.NewTemplateServiceHandler(templates{s}, opts...))
		// Files are streamed: their bodies are not bound by MaxBodyBytes
		// as a whole, only message by message.
		mux.Handle(kindlingv1connect.NewGuestServiceHandler(guest{s}, opts...))
		mux.Handle(kindlingv1connect.NewPoolServiceHandler(poolService{s}, opts...))
		mux.Handle(kindlingv1connect.NewImageServiceHandler(imageService{s}, opts...))
	}
	s.e2bRoutes(mux)
	metricsHandler := s.metrics.handler()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if !trusted && !s.validKey(requestKey(r.Header)) {
			writeE2BError(w, http.StatusUnauthorized, codeUnauthorized, errUnauthenticated.Error())
			return
		}
		metricsHandler.ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, port, ok := s.sandboxTarget(r); ok {
			s.observe("sandbox", w, r, func(w http.ResponseWriter, r *http.Request) { s.proxy.serve(w, r, id, port) })
			return
		}
		api := "e2b"
		switch {
		case strings.HasPrefix(r.URL.Path, "/kindling.v1."):
			api = "native"
		case r.URL.Path == "/metrics":
			api = "metrics"
		}
		s.observe(api, w, r, mux.ServeHTTP)
	})
}

// observe serves r with h inside a span named for its API, counted and
// timed in the metrics.
func (s *Server) observe(api string, w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request)) {
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, "kindlingd."+api, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	defer span.End()
	status := s.metrics.observe(api, w, r.WithContext(ctx), h)
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
}

// HTTPServer returns an http.Server with the server's limits around h.
func HTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// validKey reports whether key is one of the server's API keys.
func (s *Server) validKey(key string) bool {
	if key == "" {
		return false
	}
	ok := 0
	for _, k := range s.keys {
		ok |= subtle.ConstantTimeCompare(k, []byte(key))
	}
	return ok == 1
}

// requestKey is the API key a request carries.
func requestKey(h http.Header) string {
	if k := h.Get("X-API-Key"); k != "" {
		return k
	}
	if v, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// errUnauthenticated is the answer to a missing or wrong API key.
var errUnauthenticated = errors.New("missing or wrong API key: give one of the server's keys in X-API-Key or Authorization: Bearer")

// keyInterceptor checks the API key of native calls on untrusted listeners.
type keyInterceptor struct{ s *Server }

func (k keyInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !k.s.validKey(requestKey(req.Header())) {
			return nil, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
		}
		return next(ctx, req)
	}
}

func (k keyInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (k keyInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if !k.s.validKey(requestKey(conn.RequestHeader())) {
			return connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
		}
		return next(ctx, conn)
	}
}

// remove removes a sandbox and forgets its lease.
func (s *Server) remove(ctx context.Context, id string, force bool) error {
	if err := s.rt.Remove(ctx, id, force); err != nil {
		return err
	}
	s.proxy.forget(id)
	return s.leases.drop(context.WithoutCancel(ctx), id)
}

// setTimeout sets sandbox id's lifetime to d from now (none for 0), ending
// with action.
func (s *Server) setTimeout(ctx context.Context, id string, d time.Duration, action string) error {
	if _, err := s.rt.Inspect(ctx, id); err != nil {
		return err
	}
	l, err := s.leases.get(id)
	if err != nil {
		return err
	}
	l.EndAt, l.OnTimeout = time.Time{}, action
	if d > 0 {
		l.EndAt = time.Now().Add(d)
	}
	return s.leases.put(ctx, l)
}
