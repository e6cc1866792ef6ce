package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// recordingSystem records what /init asks of the machine.
type recordingSystem struct {
	mu       sync.Mutex
	clock    []time.Time
	entropy  [][]byte
	hostname []string
}

func (r *recordingSystem) SetClock(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock = append(r.clock, t)
	return nil
}

func (r *recordingSystem) AddEntropy(b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entropy = append(r.entropy, slices.Clone(b))
	return nil
}

func (r *recordingSystem) SetHostname(n string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hostname = append(r.hostname, n)
	return nil
}

func postInit(t *testing.T, s *Server, token string, body any) *httptest.ResponseRecorder {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/init", bytes.NewReader(b))
	if token != "" {
		req.Header.Set(AccessTokenHeader, token)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

// The re-init handler sets the clock, reseeds the entropy pool with the
// host's bytes and sets the hostname, through the System seam.
func TestInitReinit(t *testing.T) {
	sys := &recordingSystem{}
	s := New(Config{System: sys})
	defer s.Close()
	past := time.Now().Add(-time.Hour).UTC().Round(0)
	seed := []byte("0123456789abcdef-host-entropy")
	w := postInit(t, s, "", map[string]any{
		"timestamp": past, "entropy": seed, "hostname": "clone-1",
		"envVars": map[string]string{"A": "1"}, "accessToken": "tok",
	})
	if w.Code != http.StatusNoContent {
		t.Fatalf("init: %d %s", w.Code, w.Body)
	}
	if len(sys.clock) != 1 || !sys.clock[0].Equal(past) {
		t.Errorf("clock set to %v, want [%v]", sys.clock, past)
	}
	if len(sys.entropy) != 1 || !bytes.Equal(sys.entropy[0], seed) {
		t.Errorf("entropy added %q, want %q", sys.entropy, seed)
	}
	if !slices.Equal(sys.hostname, []string{"clone-1"}) {
		t.Errorf("hostname set to %q", sys.hostname)
	}
	if got := s.defaults.envMap()["A"]; got != "1" {
		t.Errorf("env A = %q", got)
	}

	// A replayed (older) init is acknowledged and ignored.
	w = postInit(t, s, "tok", map[string]any{"timestamp": past.Add(-time.Minute), "hostname": "replayed"})
	if w.Code != http.StatusNoContent || len(sys.hostname) != 1 {
		t.Errorf("replayed init: %d, hostnames %q", w.Code, sys.hostname)
	}
	// Without the token: 401, nothing changed.
	w = postInit(t, s, "", map[string]any{"timestamp": time.Now(), "hostname": "intruder"})
	if w.Code != http.StatusUnauthorized || len(sys.hostname) != 1 {
		t.Errorf("init without the token: %d, hostnames %q", w.Code, sys.hostname)
	}
	// The token in the body also proves the caller (envd's way).
	w = postInit(t, s, "", map[string]any{"timestamp": time.Now(), "accessToken": "tok", "hostname": "clone-2"})
	if w.Code != http.StatusNoContent || len(sys.hostname) != 2 {
		t.Errorf("init with the body token: %d, hostnames %q", w.Code, sys.hostname)
	}
	// A clock close to the host's is left alone.
	n := len(sys.clock)
	postInit(t, s, "tok", map[string]any{"timestamp": time.Now(), "accessToken": "tok"})
	if len(sys.clock) != n {
		t.Errorf("clock set although it was right")
	}
	// A bad hostname is refused before anything is applied.
	w = postInit(t, s, "tok", map[string]any{"hostname": "bad host!"})
	if w.Code != http.StatusBadRequest {
		t.Errorf("bad hostname: %d", w.Code)
	}
}

func TestRandPoolInfo(t *testing.T) {
	b := randPoolInfo([]byte{1, 2, 3, 4, 5})
	if len(b) != 8+8 {
		t.Fatalf("len = %d, want 16 (header + two words)", len(b))
	}
	if bits, size := binary.NativeEndian.Uint32(b[0:]), binary.NativeEndian.Uint32(b[4:]); bits != 40 || size != 5 {
		t.Errorf("entropy_count %d, buf_size %d; want 40, 5", bits, size)
	}
	if !bytes.Equal(b[8:13], []byte{1, 2, 3, 4, 5}) {
		t.Errorf("buffer %v", b[8:])
	}
}

func TestEndEvent(t *testing.T) {
	for _, tc := range []struct {
		ws     syscall.WaitStatus
		code   int32
		exited bool
		status string
	}{
		{0, 0, true, "exit status 0"},
		{3 << 8, 3, true, "exit status 3"},
		{syscall.WaitStatus(syscall.SIGKILL), -1, false, "signal: killed"},
	} {
		e := endEvent(tc.ws, nil)
		if e.ExitCode != tc.code || e.Exited != tc.exited || e.Status != tc.status {
			t.Errorf("endEvent(%#x) = %+v", uint32(tc.ws), e)
		}
		if (e.Error == nil) != (tc.code == 0) {
			t.Errorf("endEvent(%#x): error %v", uint32(tc.ws), e.Error)
		}
	}
}

func TestResolvePath(t *testing.T) {
	a := &account{name: "u", home: "/home/u"}
	for _, tc := range []struct{ in, workdir, want string }{
		{"", "", "/home/u"},
		{"", "/srv", "/srv"},
		{"~", "", "/home/u"},
		{"~/x/../y", "", "/home/u/y"},
		{"rel/f", "/srv", "/home/u/rel/f"},
		{"/abs//f", "", "/abs/f"},
	} {
		got, err := resolvePath(tc.in, a, tc.workdir)
		if err != nil || got != tc.want {
			t.Errorf("resolvePath(%q, workdir %q) = %q, %v; want %q", tc.in, tc.workdir, got, err, tc.want)
		}
	}
	if _, err := resolvePath("~other/x", a, ""); err == nil {
		t.Error("~other expanded")
	}
}

func TestDedupEnv(t *testing.T) {
	got := dedupEnv([]string{"A=1", "B=2", "A=3", "C="})
	if want := []string{"A=3", "B=2", "C="}; !slices.Equal(got, want) {
		t.Errorf("dedupEnv = %q, want %q", got, want)
	}
}

func TestLoadImageConfig(t *testing.T) {
	dir := t.TempDir()
	if c, err := LoadImageConfig(dir + "/missing.json"); err != nil || c.User != "" {
		t.Errorf("missing file: %+v, %v", c, err)
	}
	p := dir + "/bad.json"
	if err := os.WriteFile(p, []byte(`{"env":["NOEQUALS"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadImageConfig(p); err == nil || !strings.Contains(err.Error(), "NOEQUALS") {
		t.Errorf("bad env entry: err = %v", err)
	}
}

// sign makes a /files signature as E2B's SDK does.
func sign(path, op, user, token, exp string) string {
	raw := path + ":" + op + ":" + user + ":" + token
	if exp != "" {
		raw += ":" + exp
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
}

func TestSignedFileURL(t *testing.T) {
	s := New(Config{})
	defer s.Close()
	if w := postInit(t, s, "", map[string]any{"accessToken": "tok"}); w.Code != http.StatusNoContent {
		t.Fatalf("init: %d", w.Code)
	}
	dir := t.TempDir()
	p := dir + "/f.txt"
	if err := os.WriteFile(p, []byte("signed"), 0o644); err != nil {
		t.Fatal(err)
	}
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	for _, tc := range []struct {
		name, method, query string
		want                int
	}{
		{"read", "GET", "path=" + p + "&signature=" + url.QueryEscape(sign(p, "read", "", "tok", "")), 200},
		{"read with user and expiry", "GET", "path=" + p + "&username=root&signature_expiration=" + future + "&signature=" + url.QueryEscape(sign(p, "read", "root", "tok", future)), 200},
		{"expired", "GET", "path=" + p + "&signature_expiration=" + past + "&signature=" + url.QueryEscape(sign(p, "read", "", "tok", past)), 401},
		{"write signature used to read", "GET", "path=" + p + "&signature=" + url.QueryEscape(sign(p, "write", "", "tok", "")), 401},
		{"other path", "GET", "path=/etc/passwd&signature=" + url.QueryEscape(sign(p, "read", "", "tok", "")), 401},
		{"wrong token", "GET", "path=" + p + "&signature=" + url.QueryEscape(sign(p, "read", "", "other", "")), 401},
		{"unsigned", "GET", "path=" + p, 401},
		{"upload", "POST", "path=" + dir + "/up.txt&signature=" + url.QueryEscape(sign(dir+"/up.txt", "write", "", "tok", "")), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/files?"+tc.query, strings.NewReader("up"))
			req.Header.Set("Content-Type", "application/octet-stream")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != tc.want {
				t.Errorf("%s %s: %d %s, want %d", tc.method, tc.query, w.Code, w.Body, tc.want)
			}
		})
	}
}

// A simulated guest never sets the clock (it is the host's); /init still
// succeeds.
func TestSimulatedSystemLeavesClock(t *testing.T) {
	err := SimulatedSystem{}.SetClock(time.Now().Add(-time.Hour))
	if !errors.Is(err, ErrUnchanged) {
		t.Fatalf("SetClock = %v, want ErrUnchanged", err)
	}
	s := New(Config{System: HostSystem{}})
	defer s.Close()
	if w := postInit(t, s, "", map[string]any{"timestamp": time.Now().Add(-time.Hour), "hostname": "h", "entropy": []byte("x")}); w.Code != http.StatusNoContent {
		t.Errorf("init on a host: %d %s", w.Code, w.Body)
	}
}
