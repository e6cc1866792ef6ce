package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/agent/internal/spec/filesystem/filesystemconnect"
	"github.com/kindling-vm/kindling/agent/internal/spec/process/processconnect"
)

// EnvdVersion is the envd release whose protocol the agent implements; it is
// sent in the X-Envd-Version header of /init and /health answers, so that
// E2B SDKs enable the features that release has (octet-stream uploads,
// stdin control, recursive watch) and no others (file metadata, watch entry
// info).
const EnvdVersion = "0.6.1"

// AccessTokenHeader carries the access token set by /init.
const AccessTokenHeader = "X-Access-Token"

// Config configures a Server.
type Config struct {
	// Image holds the image's process defaults (see LoadImageConfig).
	Image ImageConfig
	// System changes the machine on /init; nil means HostSystem.
	System System
	// Reaper waits for started processes; nil means DirectReaper (each
	// process waited for on its own). An agent that is PID 1 passes its
	// whole-system reaper.
	Reaper Reaper
	// Logger receives the agent's log; nil discards it. The access token is
	// never logged.
	Logger *slog.Logger
	// Shutdown, when set, is called (once, in its own goroutine) after the
	// agent answered a POST /kindling/shutdown.
	Shutdown func()
	// Console receives the output of processes started with their output
	// to the console (OutputHeader: console); kindling-agent passes its
	// standard output, the guest's serial console when it is init. nil
	// refuses such a start.
	Console *os.File
}

// OutputHeader on a process Start request, kindling's addition to envd's
// protocol: "console" gives the process the agent's console (Config.Console)
// as its standard output and error, and /dev/null as its input, instead of
// streaming its output; it runs on when the stream ends, and its output is
// not lost. The answer carries the header back, so a client can tell an
// agent that ignored it.
const OutputHeader = "Kindling-Output"

// OutputConsole is OutputHeader's one value.
const OutputConsole = "console"

// Server is the agent's HTTP handler.
type Server struct {
	log      *slog.Logger
	sys      System
	reaper   Reaper
	defaults *defaults
	shutdown func()
	console  *os.File
	procs    *procTable
	watchers *watcherTable
	handler  http.Handler

	mu       sync.Mutex // guards token and lastInit
	token    []byte     // access token; nil until /init sets one
	lastInit time.Time  // timestamp of the newest /init applied
	shutOnce sync.Once
}

// New returns a Server.
func New(c Config) *Server {
	s := &Server{
		log:      c.Logger,
		sys:      c.System,
		reaper:   c.Reaper,
		defaults: newDefaults(c.Image),
		shutdown: c.Shutdown,
		console:  c.Console,
		procs:    newProcTable(),
		watchers: newWatcherTable(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.sys == nil {
		s.sys = HostSystem{}
	}
	if s.reaper == nil {
		s.reaper = DirectReaper{}
	}
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{connect.WithCompressMinBytes(1 << 20)}
	mux.Handle(processconnect.NewProcessHandler(&processService{s: s}, opts...))
	mux.Handle(filesystemconnect.NewFilesystemHandler(&filesystemService{s: s}, opts...))
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("POST /init", s.init)
	mux.HandleFunc("GET /envs", s.envs)
	mux.HandleFunc("GET /files", s.download)
	mux.HandleFunc("POST /files", s.upload)
	mux.HandleFunc("POST /kindling/shutdown", s.shutdownHandler)
	mux.HandleFunc("POST /kindling/chmod", s.chmod)
	s.handler = s.authorize(mux)
	return s
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Serve serves on ln until ctx is cancelled, then stops listening, kills
// the processes it started and returns. It returns nil after ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	<-errc
	return nil
}

// Close kills every process the server started and stops its watchers.
func (s *Server) Close() {
	s.procs.killAll()
	s.watchers.closeAll()
}

// authorize refuses, once a token is set, every request without it. /health
// stays open (it says nothing but "up"); /init checks the token itself
// because a host re-initialising a clone may prove itself with the token in
// the body instead; /files also accepts a URL signed with the token (E2B's
// download and upload URLs).
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || (r.Method == http.MethodPost && r.URL.Path == "/init") {
			next.ServeHTTP(w, r)
			return
		}
		if !s.tokenOK(r.Header.Get(AccessTokenHeader)) && !s.signedFileURL(r) {
			s.log.Warn("request refused: missing or wrong access token", "method", r.Method, "path", r.URL.Path)
			jsonError(w, http.StatusUnauthorized, errors.New("unauthorized: missing or wrong access token ("+AccessTokenHeader+")"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenOK reports whether got matches the access token, or no token is set.
func (s *Server) tokenOK(got string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == nil {
		return true
	}
	return subtle.ConstantTimeCompare(s.token, []byte(got)) == 1
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Envd-Version", EnvdVersion)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) envs(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.defaults.envMap())
}

func (s *Server) shutdownHandler(w http.ResponseWriter, _ *http.Request) {
	if s.shutdown == nil {
		jsonError(w, http.StatusNotImplemented, errors.New("this agent cannot shut the machine down"))
		return
	}
	w.WriteHeader(http.StatusAccepted)
	s.shutOnce.Do(func() { go s.shutdown() })
}

// httpError is the JSON error body of the plain HTTP endpoints, as envd's.
type httpError struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func jsonError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(httpError{Message: err.Error(), Code: code})
}

// account resolves the user of a request: the Basic-auth user name if the
// request has one (an unknown name is an error), else the default user,
// falling back to root when the guest has no such user.
func (s *Server) account(h http.Header) (*account, error) {
	r := http.Request{Header: h}
	if name, _, ok := r.BasicAuth(); ok && name != "" {
		return s.namedAccount(name)
	}
	return s.namedAccount("")
}

// namedAccount resolves name, or the default user when name is empty.
func (s *Server) namedAccount(name string) (*account, error) {
	if name != "" {
		a, err := lookupUser(name)
		if err != nil {
			return nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("invalid username %q: %w", name, err))
		}
		return a, nil
	}
	_, def := s.defaults.get()
	if a, err := lookupUser(def); err == nil {
		return a, nil
	}
	return rootAccount(), nil
}
