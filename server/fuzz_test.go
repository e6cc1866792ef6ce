package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// fuzzServer is a server on an empty root: no template exists, so no
// request can start anything.
func fuzzServer(f *testing.F) http.Handler {
	rt, err := sandbox.Open(testutil.ShortTempDir(f))
	if err != nil {
		f.Fatal(err)
	}
	tpl, err := template.Open(rt)
	if err != nil {
		f.Fatal(err)
	}
	s, err := server.New(context.Background(), server.Config{Runtime: rt, Templates: tpl, APIKeys: []string{testKey}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	return s.Handler(false)
}

// checkE2BAnswer fails unless rec is a 2xx or a client error with E2B's
// Error body: decoding never fails as a server error.
func checkE2BAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Code >= 300 {
		var e struct {
			Code      int    `json:"code"`
			ErrorCode string `json:"error_code"`
			Message   string `json:"message"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != rec.Code || e.ErrorCode == "" || e.Message == "" {
			t.Fatalf("status %d with body %q: not an E2B error (%v)", rec.Code, rec.Body, err)
		}
	}
}

func FuzzE2BCreateBody(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"templateID":"base"}`, `{"templateID":"base","timeout":30,"metadata":{"a":"b"},"envVars":{"X":"1"}}`,
		`{"templateID":"b","network":null,"autoResume":{"enabled":true}}`, `[1,2]`, `{"templateID":"x"}{}`, `{"timeout":1e99}`} {
		f.Add(s)
	}
	h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/sandboxes", "/v2/sandboxes", "/sandboxes/abc/timeout", "/v2/sandboxes/abc/connect", "/sandboxes/abc/resume"} {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("X-API-Key", testKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			checkE2BAnswer(t, rec)
			if rec.Code == http.StatusCreated || rec.Code == http.StatusOK {
				t.Fatalf("POST %s %q: status %d with no template or sandbox", path, body, rec.Code)
			}
		}
	})
}

func FuzzE2BListQuery(f *testing.F) {
	for _, s := range []string{``, `metadata=a%3Db`, `state=running,paused&limit=5`, `limit=-1`, `metadata=%zz`, `order=asc&template=x`} {
		f.Add(s)
	}
	h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, query string) {
		if _, err := url.ParseQuery(query); err != nil && strings.ContainsAny(query, " \n\r\t") {
			return // not a request line a client could send
		}
		req := httptest.NewRequest("GET", "/v2/sandboxes", nil)
		req.URL.RawQuery = query
		req.Header.Set("X-API-Key", testKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkE2BAnswer(t, rec)
	})
}
