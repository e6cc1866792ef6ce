package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/kindling-vm/kindling/sandbox"
)

// e2bError is E2B's Error body, with a stable machine-readable error_code.
type e2bError struct {
	Code      int    `json:"code"`
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// Stable error codes of the E2B API's answers.
const (
	codeUnauthorized = "unauthorized"
	codeBadRequest   = "bad_request"
	codeTooLarge     = "body_too_large"
	codeNotFound     = "not_found"
	codeConflict     = "conflict"
	codeExists       = "already_exists"
	codeNotServed    = "not_served"
	codeNotSupported = "not_supported"
	codeUnavailable  = "unavailable"
	codeInternal     = "internal"
	codeMethod       = "method_not_allowed"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeE2BError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, e2bError{Code: status, ErrorCode: code, Message: msg})
}

// runtimeStatus maps an error of the runtime to an HTTP status and code.
func runtimeStatus(err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, codeTooLarge
	case errors.Is(err, sandbox.ErrNotFound):
		return http.StatusNotFound, codeNotFound
	case errors.Is(err, sandbox.ErrExists):
		return http.StatusConflict, codeExists
	case errors.Is(err, sandbox.ErrInvalid):
		return http.StatusBadRequest, codeBadRequest
	case errors.Is(err, sandbox.ErrConflict):
		return http.StatusConflict, codeConflict
	case errors.Is(err, sandbox.ErrNotSupported):
		return http.StatusBadRequest, codeNotSupported
	case errors.Is(err, sandbox.ErrUnavailable):
		return http.StatusServiceUnavailable, codeUnavailable
	}
	return http.StatusInternalServerError, codeInternal
}

// writeRuntimeError answers err as an E2B error.
func writeRuntimeError(w http.ResponseWriter, err error) {
	status, code := runtimeStatus(err)
	writeE2BError(w, status, code, err.Error())
}
