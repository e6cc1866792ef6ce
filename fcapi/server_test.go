package fcapi

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// recorded is one request seen by a testServer.
type recorded struct {
	Method string
	Path   string // escaped, as on the wire
	Host   string
	Body   string
}

// testServer is a stand-in Firecracker API on a Unix socket: it answers
// /version and / for the release it emulates, records every request, and
// hands other requests to handler (204 when nil).
type testServer struct {
	sock    string
	version string // "" makes GET /version answer 400 (pre-1.0 behaviour)
	vmmVer  string
	handler http.HandlerFunc
	srv     *http.Server
	// versionDelay slows the answer to GET /version; set before use.
	versionDelay time.Duration

	mu       sync.Mutex // guards the fields below
	reqs     []recorded
	conns    int // open connections now
	maxConns int // most connections open at once
	total    int // connections accepted
}

// shortDir makes a short temporary directory, removed at cleanup.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fca")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newTestServer serves an emulated release ver (e.g. "1.7.0"); releases
// below 1.0 answer GET /version with 400 and report ver as vmm_version.
func newTestServer(t testing.TB, ver string, h http.HandlerFunc) *testServer {
	t.Helper()
	s := &testServer{sock: filepath.Join(shortDir(t), "api.sock"), version: ver, vmmVer: ver, handler: h}
	if pv, err := ParseVersion(ver); err == nil && pv.Less(minSupported) {
		s.version = ""
	}
	ln, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ConnState: s.connState}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		s.srv.Close()
		<-done
	})
	return s
}

func (s *testServer) connState(_ net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns++
		s.total++
		s.maxConns = max(s.maxConns, s.conns)
	case http.StateClosed, http.StateHijacked:
		s.conns--
	}
}

func (s *testServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, recorded{Method: r.Method, Path: r.URL.EscapedPath(), Host: r.Host, Body: string(body)})
	s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/version":
		time.Sleep(s.versionDelay)
		if s.version == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"fault_message": "Invalid request method and/or path: GET /version."})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"firecracker_version": s.version})
	case r.Method == http.MethodGet && r.URL.Path == "/" && s.handler == nil:
		writeJSON(w, http.StatusOK, map[string]string{"app_name": "Firecracker", "id": "anonymous-instance", "state": "Not started", "vmm_version": s.vmmVer})
	case s.handler != nil:
		s.handler(w, r)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// requests returns the recorded requests other than the version probe.
func (s *testServer) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []recorded
	for _, r := range s.reqs {
		if r.Method == http.MethodGet && (r.Path == "/version" || r.Path == "/") {
			continue
		}
		out = append(out, r)
	}
	return out
}

// count returns how many requests had method and path.
func (s *testServer) count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqs {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func (s *testServer) connStats() (maxOpen, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConns, s.total
}

// client returns a client for s, closed at cleanup.
func (s *testServer) client(t testing.TB, opts ...Option) *Client {
	t.Helper()
	c, err := New(s.sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
