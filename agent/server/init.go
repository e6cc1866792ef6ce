package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"time"
)

// InitRequest is the body of POST /init: envd's fields, and kindling's own
// re-init fields (hostname, entropy), which envd clients never send.
type InitRequest struct {
	// EnvVars are merged into the default environment of new processes.
	EnvVars map[string]string `json:"envVars,omitempty"`
	// AccessToken becomes the token every later request must carry. When a
	// token is already set, a request without one clears it.
	AccessToken *string `json:"accessToken,omitempty"`
	// Timestamp is the host's time; the guest clock is set to it when it is
	// off by more than a little. An /init older than the last applied one is
	// acknowledged and ignored (a replay).
	Timestamp *time.Time `json:"timestamp,omitempty"`
	// DefaultUser and DefaultWorkdir replace the image's defaults.
	DefaultUser    string `json:"defaultUser,omitempty"`
	DefaultWorkdir string `json:"defaultWorkdir,omitempty"`

	// Hostname, if set, becomes the machine's hostname (kindling).
	Hostname string `json:"hostname,omitempty"`
	// Entropy, if set, is mixed into the kernel's entropy pool and credited
	// (kindling): fresh host randomness for a restored or cloned guest.
	Entropy []byte `json:"entropy,omitempty"`
}

// Clock tolerances before /init sets the guest clock, as envd's: a guest
// slightly behind the host (the request took time) or a few seconds ahead
// is left alone.
const (
	clockBehind = 50 * time.Millisecond
	clockAhead  = 5 * time.Second
)

// maxInitBody bounds the /init body.
const maxInitBody = 1 << 20

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// init applies an InitRequest. Before any token is set it is open; after,
// the caller proves itself with the current token, in the X-Access-Token
// header or as the body's accessToken.
func (s *Server) init(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Envd-Version", EnvdVersion)
	w.Header().Set("Cache-Control", "no-store")
	body, err := io.ReadAll(io.LimitReader(r.Body, maxInitBody+1))
	if err != nil {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("read init body: %w", err))
		return
	}
	if len(body) > maxInitBody {
		jsonError(w, http.StatusRequestEntityTooLarge, errors.New("init body over 1 MiB"))
		return
	}
	var req InitRequest
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("init body: %w", err))
			return
		}
	}
	clear(body)
	if req.Hostname != "" && (len(req.Hostname) > 64 || !hostnameRE.MatchString(req.Hostname)) {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("init: hostname %q is not a valid host name", req.Hostname))
		return
	}
	status, err := s.applyInit(r.Header.Get(AccessTokenHeader), &req)
	if err != nil {
		jsonError(w, status, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// applyInit checks the caller and applies req; it returns the HTTP status
// to answer with on error.
func (s *Server) applyInit(headerToken string, req *InitRequest) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != nil {
		okHeader := subtle.ConstantTimeCompare(s.token, []byte(headerToken)) == 1
		okBody := req.AccessToken != nil && subtle.ConstantTimeCompare(s.token, []byte(*req.AccessToken)) == 1
		if !okHeader && !okBody {
			s.log.Warn("init refused: missing or wrong access token")
			return http.StatusUnauthorized, errors.New("unauthorized: init needs the current access token")
		}
	}
	if req.Timestamp != nil {
		if !req.Timestamp.After(s.lastInit) {
			s.log.Info("init older than the last applied one: ignored", "timestamp", req.Timestamp)
			return 0, nil
		}
		s.lastInit = *req.Timestamp
		now := time.Now()
		if now.Before(req.Timestamp.Add(-clockBehind)) || now.After(req.Timestamp.Add(clockAhead)) {
			if err := s.sys.SetClock(*req.Timestamp); err != nil {
				s.systemError("set clock", err)
			} else {
				s.log.Info("clock set", "time", req.Timestamp)
			}
		}
	}
	if len(req.Entropy) > 0 {
		if err := s.sys.AddEntropy(req.Entropy); err != nil {
			if !errors.Is(err, ErrUnchanged) {
				return http.StatusInternalServerError, fmt.Errorf("init: %w", err)
			}
			s.systemError("add entropy", err)
		} else {
			s.log.Info("entropy pool reseeded", "bytes", len(req.Entropy))
		}
	}
	if req.Hostname != "" {
		if err := s.sys.SetHostname(req.Hostname); err != nil {
			if !errors.Is(err, ErrUnchanged) {
				return http.StatusInternalServerError, fmt.Errorf("init: %w", err)
			}
			s.systemError("set hostname", err)
		} else {
			s.log.Info("hostname set", "hostname", req.Hostname)
		}
	}
	if len(req.EnvVars) > 0 {
		s.defaults.setEnv(req.EnvVars)
	}
	s.defaults.set(req.DefaultWorkdir, req.DefaultUser)
	switch {
	case req.AccessToken != nil && *req.AccessToken != "":
		clear(s.token)
		s.token = []byte(*req.AccessToken)
		s.log.Info("access token set")
	case s.token != nil:
		clear(s.token)
		s.token = nil
		s.log.Info("access token cleared")
	}
	return 0, nil
}

// systemError logs a machine change that did not happen.
func (s *Server) systemError(what string, err error) {
	if errors.Is(err, ErrUnchanged) {
		s.log.Info(what+": skipped", "reason", err)
		return
	}
	s.log.Error(what, "err", err)
}
