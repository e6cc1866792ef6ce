package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
)

// chmod answers POST /kindling/chmod?path=P&mode=OCTAL[&username=U]: it
// sets the permission bits (and setuid, setgid, sticky) of P, not
// following a final symbolic link's target for the lookup of P itself. It
// is kindling's, additive to envd's protocol (whose file calls cannot set
// a mode), so that `kindling cp` keeps modes; the E2B SDKs never call it.
// 204 on success; 400 a bad mode or path, 404 a missing path, 401 an
// unknown user.
func (s *Server) chmod(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.fileAccount(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	m, err := strconv.ParseUint(q.Get("mode"), 8, 32)
	if err != nil || m > 0o7777 {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("chmod: mode %q: give octal permission bits like 0755", q.Get("mode")))
		return
	}
	p, err := resolvePath(q.Get("path"), acct, "")
	if err != nil || q.Get("path") == "" {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("chmod: the path query parameter is required"))
		return
	}
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		jsonError(w, http.StatusNotFound, fmt.Errorf("path %q does not exist", p))
		return
	case err != nil:
		jsonError(w, http.StatusInternalServerError, fmt.Errorf("chmod %q: %w", p, err))
		return
	case fi.Mode()&fs.ModeSymlink != 0:
		jsonError(w, http.StatusBadRequest, fmt.Errorf("chmod %q: a symbolic link has no mode of its own", p))
		return
	}
	if err := os.Chmod(p, goMode(uint32(m))); err != nil {
		jsonError(w, diskStatus(err), fmt.Errorf("chmod %q: %w", p, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// goMode turns Unix mode bits into an fs.FileMode for os.Chmod.
func goMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
