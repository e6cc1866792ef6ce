package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// signedFileURL reports whether a /files request carries a valid signature
// made with the access token, as E2B's SDKs make them for download and
// upload URLs: signature = "v1_" + unpadded base64 of
// SHA-256("path:operation:username:token[:expiration]"), operation "read"
// for GET and "write" for POST, expiration (Unix seconds, optional) in
// signature_expiration.
func (s *Server) signedFileURL(r *http.Request) bool {
	if r.URL.Path != "/files" {
		return false
	}
	var op string
	switch r.Method {
	case http.MethodGet:
		op = "read"
	case http.MethodPost:
		op = "write"
	default:
		return false
	}
	q := r.URL.Query()
	sig := q.Get("signature")
	if sig == "" {
		return false
	}
	parts := []string{q.Get("path"), op, q.Get("username"), ""}
	if exp := q.Get("signature_expiration"); exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || time.Now().Unix() > n {
			return false
		}
		parts = append(parts, exp)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == nil {
		return false
	}
	parts[3] = string(s.token)
	sum := sha256.Sum256([]byte(strings.Join(parts, ":")))
	want := "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
	clear(parts[3:4])
	return subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1
}
