package server

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"connectrpc.com/connect"
)

// FileEntry is one uploaded file in the answer to POST /files.
type FileEntry struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// fileAccount resolves the user of a /files request: the username query
// parameter, else the default user.
func (s *Server) fileAccount(w http.ResponseWriter, r *http.Request) (*account, bool) {
	acct, err := s.namedAccount(r.URL.Query().Get("username"))
	if err != nil {
		jsonError(w, http.StatusUnauthorized, errors.New(connect.CodeOf(err).String()+": "+errorMessage(err)))
		return nil, false
	}
	return acct, true
}

func errorMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// download answers GET /files?path=P[&username=U] with the file's bytes
// (ranges supported; gzip when the client asks for it).
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.fileAccount(w, r)
	if !ok {
		return
	}
	p, err := resolvePath(r.URL.Query().Get("path"), acct, "")
	if err != nil {
		jsonError(w, http.StatusBadRequest, err)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			jsonError(w, http.StatusNotFound, fmt.Errorf("path %q does not exist", p))
			return
		}
		jsonError(w, http.StatusInternalServerError, fmt.Errorf("open %q: %w", p, err))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		jsonError(w, http.StatusInternalServerError, fmt.Errorf("stat %q: %w", p, err))
		return
	}
	if fi.IsDir() {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("path %q is a directory", p))
		return
	}
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": filepath.Base(p)}))
	w.Header().Set("Vary", "Accept-Encoding")
	if wantsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/octet-stream")
		gz := gzip.NewWriter(w)
		if _, err := io.Copy(gz, f); err != nil {
			s.log.Debug("download", "path", p, "err", err)
		}
		_ = gz.Close()
		return
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// wantsGzip reports whether the request asks for gzip (and not a range).
func wantsGzip(r *http.Request) bool {
	if r.Header.Get("Range") != "" {
		return false
	}
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// upload answers POST /files: a multipart form whose "file" parts are
// written to the path query parameter (or each part's file name), or an
// application/octet-stream body written to path. Parent directories are
// created; files are owned by the request's user; an existing file is
// replaced. The answer lists the files written.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.fileAccount(w, r)
	if !ok {
		return
	}
	body := r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		gz, err := gzip.NewReader(body)
		if err != nil {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("gzip body: %w", err))
			return
		}
		defer gz.Close()
		body = gz
	}
	query := r.URL.Query()
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var written []FileEntry
	switch {
	case mediaType == "application/octet-stream":
		if !query.Has("path") {
			jsonError(w, http.StatusBadRequest, errors.New("upload: the path query parameter is required with application/octet-stream"))
			return
		}
		p, err := resolvePath(query.Get("path"), acct, "")
		if err != nil {
			jsonError(w, http.StatusBadRequest, err)
			return
		}
		if code, err := writeFile(p, body, acct); err != nil {
			jsonError(w, code, err)
			return
		}
		written = append(written, FileEntry{Path: p, Name: filepath.Base(p), Type: "file"})
	case strings.HasPrefix(mediaType, "multipart/"):
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				jsonError(w, http.StatusBadRequest, fmt.Errorf("upload: multipart body: %w", err))
				return
			}
			entry, code, err := s.uploadPart(part, query.Get("path"), query.Has("path"), acct, written)
			_ = part.Close()
			if err != nil {
				jsonError(w, code, err)
				return
			}
			if entry != nil {
				written = append(written, *entry)
			}
		}
	default:
		jsonError(w, http.StatusBadRequest, fmt.Errorf("upload: content type %q: want multipart/form-data or application/octet-stream", mediaType))
		return
	}
	if len(written) == 0 {
		jsonError(w, http.StatusBadRequest, errors.New("upload: no file in the request"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(written)
}

// uploadPart writes one multipart part named "file" (others are skipped).
func (s *Server) uploadPart(part *multipart.Part, path string, hasPath bool, acct *account, done []FileEntry) (*FileEntry, int, error) {
	_, params, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if params["name"] != "file" {
		return nil, 0, nil
	}
	if !hasPath {
		// The raw file name, which may be a whole path (Part.FileName
		// would keep only its last element).
		path = params["filename"]
	}
	if path == "" {
		return nil, http.StatusBadRequest, errors.New("upload: a file part has no path (no path parameter, no file name)")
	}
	p, err := resolvePath(path, acct, "")
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	for _, e := range done {
		if e.Path == p {
			return nil, http.StatusBadRequest, fmt.Errorf("upload: two files for %q in one request", p)
		}
	}
	if code, err := writeFile(p, part, acct); err != nil {
		return nil, code, err
	}
	return &FileEntry{Path: p, Name: filepath.Base(p), Type: "file"}, 0, nil
}

// writeFile writes r to path for acct; it returns the HTTP status of a
// failure.
func writeFile(path string, r io.Reader, acct *account) (int, error) {
	if err := ensureDirs(filepath.Dir(path), acct); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("upload %q: parent directories: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return http.StatusBadRequest, fmt.Errorf("upload %q: path is a directory", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return diskStatus(err), fmt.Errorf("upload %q: %w", path, err)
	}
	if os.Geteuid() == 0 {
		if err := f.Chown(int(acct.uid), int(acct.gid)); err != nil {
			_ = f.Close()
			return http.StatusInternalServerError, fmt.Errorf("upload %q: chown: %w", path, err)
		}
	}
	if _, err := f.ReadFrom(r); err != nil {
		_ = f.Close()
		return diskStatus(err), fmt.Errorf("upload %q: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return diskStatus(err), fmt.Errorf("upload %q: %w", path, err)
	}
	return 0, nil
}

func diskStatus(err error) int {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}
