package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// do sends one request to the rig's TCP listener and returns the status
// and the decoded E2B error (if the body is one).
func do(t *testing.T, r *rig, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, r.url+path, strings.NewReader(body))
	must(t, err)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return res.StatusCode, m
}

// Every E2B endpoint checks its key and its input before doing anything,
// and answers E2B's Error body with a stable error_code.
func TestE2BBadInput(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	_, err := r.rt.Create(ctx, r.idleSpec("idle1"), sandbox.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { _ = r.rt.Remove(context.Background(), "idle1", true) })

	big := `{"templateID":"base","metadata":{"k":"` + strings.Repeat("x", server.MaxBodyBytes) + `"}}`
	tests := []struct {
		name, method, path, key, body string
		status                        int
		code                          string
	}{
		{"no key", "GET", "/v2/sandboxes", "", "", 401, "unauthorized"},
		{"wrong key", "POST", "/sandboxes", "wrong-key-0123456789", `{"templateID":"base"}`, 401, "unauthorized"},
		{"health needs no key", "GET", "/health", "", "", 200, ""},
		{"not served", "GET", "/templates", testKey, "", 404, "not_served"},
		{"method", "PUT", "/sandboxes", testKey, "", 405, "method_not_allowed"},
		{"no body", "POST", "/sandboxes", testKey, "", 400, "bad_request"},
		{"not json", "POST", "/v2/sandboxes", testKey, "{", 400, "bad_request"},
		{"trailing data", "POST", "/sandboxes", testKey, `{"templateID":"base"} {}`, 400, "bad_request"},
		{"wrong type", "POST", "/sandboxes", testKey, `{"templateID":7}`, 400, "bad_request"},
		{"no template", "POST", "/sandboxes", testKey, `{"timeout":10}`, 400, "bad_request"},
		{"negative timeout", "POST", "/sandboxes", testKey, `{"templateID":"base","timeout":-1}`, 400, "bad_request"},
		{"huge timeout", "POST", "/sandboxes", testKey, `{"templateID":"base","timeout":99999999}`, 400, "bad_request"},
		{"bad metadata key", "POST", "/sandboxes", testKey, `{"templateID":"base","metadata":{"a b":"c"}}`, 400, "bad_request"},
		{"bad env name", "POST", "/sandboxes", testKey, `{"templateID":"base","envVars":{"A=B":"c"}}`, 400, "bad_request"},
		{"network deny rules", "POST", "/sandboxes", testKey, `{"templateID":"base","network":{"denyOut":["10.0.0.0/8"]}}`, 400, "not_supported"},
		{"network bad allow rule", "POST", "/sandboxes", testKey, `{"templateID":"base","network":{"allowOut":["10.0.0.0/99"]}}`, 400, "bad_request"},
		{"network update bad rule", "PUT", "/sandboxes/idle1/network", testKey, `{"allowOut":["10.0.0.0/99"]}`, 400, "bad_request"},
		{"network update not shown", "PUT", "/sandboxes/idle1/network", testKey, `{"allowOut":["10.0.0.0/8"]}`, 404, "not_found"},
		{"unknown template", "POST", "/sandboxes", testKey, `{"templateID":"nosuch"}`, 404, "not_found"},
		{"body too large", "POST", "/sandboxes", testKey, big, 413, "body_too_large"},
		{"get unknown", "GET", "/sandboxes/nosuch", testKey, "", 404, "not_found"},
		{"get bad id", "GET", "/sandboxes/..", testKey, "", 404, "not_served"},
		{"get created (not shown)", "GET", "/sandboxes/idle1", testKey, "", 404, "not_found"},
		{"kill unknown", "DELETE", "/sandboxes/nosuch", testKey, "", 404, "not_found"},
		{"timeout without body", "POST", "/sandboxes/idle1/timeout", testKey, "", 400, "bad_request"},
		{"timeout missing field", "POST", "/sandboxes/idle1/timeout", testKey, `{}`, 400, "bad_request"},
		{"connect without timeout", "POST", "/v2/sandboxes/idle1/connect", testKey, `{}`, 400, "bad_request"},
		{"pause unknown", "POST", "/sandboxes/nosuch/pause", testKey, "", 404, "not_found"},
		{"list bad state", "GET", "/v2/sandboxes?state=gone", testKey, "", 400, "bad_request"},
		{"list bad limit", "GET", "/v2/sandboxes?limit=0", testKey, "", 400, "bad_request"},
		{"list bad metadata", "GET", "/v2/sandboxes?metadata=a%20b%3Dc", testKey, "", 400, "bad_request"},
		{"list bad next token", "GET", "/v2/sandboxes?nextToken=x", testKey, "", 400, "bad_request"},
		{"list bad order", "GET", "/v2/sandboxes?order=up", testKey, "", 400, "bad_request"},
		{"list bad startedAfter", "GET", "/v2/sandboxes?startedAfter=yesterday", testKey, "", 400, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, r, tt.method, tt.path, tt.key, tt.body)
			if status != tt.status {
				t.Fatalf("%s %s: status %d, want %d (%v)", tt.method, tt.path, status, tt.status, body)
			}
			if tt.code == "" {
				return
			}
			if body["error_code"] != tt.code || body["code"] != float64(tt.status) || body["message"] == "" {
				t.Errorf("%s %s: body %v, want error_code %q", tt.method, tt.path, body, tt.code)
			}
		})
	}
	// Nothing was created by the refused requests.
	list, err := r.rt.List(ctx, sandbox.ListOptions{})
	must(t, err)
	if len(list) != 1 {
		t.Errorf("sandboxes after bad requests: %+v", list)
	}
}

// Sandbox traffic: E2B's headers or a <port>-<id>.<domain> host route into
// the sandbox; what cannot be reached says why.
func TestSandboxTrafficRouting(t *testing.T) {
	r := newRig(t, server.Config{Domain: "sbx.test"})
	ctx := context.Background()
	_, err := r.rt.Create(ctx, r.idleSpec("novsock"), sandbox.CreateOptions{})
	must(t, err)
	_, err = r.rt.Start(ctx, "novsock")
	must(t, err)
	t.Cleanup(func() { _ = r.rt.Remove(context.Background(), "novsock", true) })

	tests := []struct {
		name    string
		host    string
		headers map[string]string
		status  int
		code    string
	}{
		{"header, unknown sandbox", "", map[string]string{"E2b-Sandbox-Id": "nosuch", "E2b-Sandbox-Port": "49983"}, 404, "not_found"},
		{"header, bad id", "", map[string]string{"E2b-Sandbox-Id": "../x"}, 400, "bad_request"},
		{"host, other port, no vsock", "8080-novsock.sbx.test", nil, 502, "sandbox_unreachable"},
		{"host, no vsock", "49983-novsock.sbx.test", nil, 502, "sandbox_unreachable"},
		{"host, another domain (the API's own /health)", "49983-novsock.other.test", nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", r.url+"/health", nil)
			must(t, err)
			if tt.host != "" {
				req.Host = tt.host
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			must(t, err)
			defer res.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(res.Body).Decode(&body)
			if res.StatusCode != tt.status || (tt.code != "" && body["error_code"] != tt.code) {
				t.Errorf("status %d body %v, want %d %s", res.StatusCode, body, tt.status, tt.code)
			}
		})
	}
}

// A lease ends a sandbox's life: killed and removed, or paused; a server
// started again on the same root re-arms the leases it finds.
func TestLeases(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	for _, id := range []string{"short", "napper", "later"} {
		_, err := r.client.Create(ctx, r.idleSpec(id), sandbox.CreateOptions{})
		must(t, err)
		_, err = r.client.Start(ctx, id)
		must(t, err)
	}
	t.Cleanup(func() {
		for _, id := range []string{"short", "napper", "later"} {
			_ = r.rt.Remove(context.Background(), id, true)
		}
	})
	must(t, r.client.SetTimeout(ctx, "short", 100*time.Millisecond, false))
	must(t, r.client.SetTimeout(ctx, "napper", 100*time.Millisecond, true))
	must(t, r.client.SetTimeout(ctx, "later", time.Hour, false))
	waitFor(t, "the short lease to remove its sandbox", func() bool {
		_, err := r.rt.Inspect(ctx, "short")
		return err != nil
	})
	waitFor(t, "the napper lease to pause its sandbox", func() bool {
		in, _ := r.rt.Inspect(ctx, "napper")
		return in.Status == sandbox.Paused
	})
	if in, _ := r.rt.Inspect(ctx, "later"); in.Status != sandbox.Running {
		t.Fatalf("later: %s", in.Status)
	}
	if err := r.client.SetTimeout(ctx, "nosuch", time.Second, false); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("SetTimeout of a missing sandbox: %v", err)
	}
	if err := r.client.SetTimeout(ctx, "later", -time.Second, false); err == nil {
		t.Error("a negative timeout was accepted")
	}

	// A second server on the same root (as after a restart) re-arms the
	// lease of "later", shortened meanwhile by the first.
	must(t, r.client.SetTimeout(ctx, "later", 300*time.Millisecond, false))
	r.srv.Close() // the first server's timers stop: only the new one can fire
	s2, err := server.New(ctx, server.Config{Runtime: r.rt})
	must(t, err)
	defer s2.Close()
	waitFor(t, "the re-adopted lease to remove its sandbox", func() bool {
		_, err := r.rt.Inspect(ctx, "later")
		return err != nil
	})
}

// The HTTP server kindlingd runs has the limits against slow and greedy
// clients, and a client that never finishes its headers is cut off.
func TestHTTPServerLimits(t *testing.T) {
	hs := server.HTTPServer(http.NotFoundHandler(), nil)
	if hs.ReadHeaderTimeout != server.ReadHeaderTimeout || hs.IdleTimeout != server.IdleTimeout || hs.MaxHeaderBytes != server.MaxHeaderBytes {
		t.Fatalf("limits: %+v", hs)
	}
	// The same server with a short header timeout, to see it cut a client off.
	hs.ReadHeaderTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	done := make(chan struct{})
	go func() { _ = hs.Serve(ln); close(done) }()
	defer func() { _ = hs.Close(); <-done }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	must(t, err)
	must(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the slow client was not cut off: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cut off after %v", d)
	}
}

// The E2B list pages with limit and the X-Next-Token cursor, as the
// public spec has it; every sandbox comes once, in order, even when one
// goes between pages.
func TestE2BListPages(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("page%d", i)
		_, err := r.rt.Create(ctx, r.idleSpec(id), sandbox.CreateOptions{})
		must(t, err)
		_, err = r.rt.Start(ctx, id)
		must(t, err)
		ids = append(ids, id)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_ = r.rt.Remove(context.Background(), id, true)
		}
	})
	list := func(query string) ([]string, http.Header) {
		t.Helper()
		req, err := http.NewRequest("GET", r.url+"/v2/sandboxes?"+query, nil)
		must(t, err)
		req.Header.Set("X-API-Key", testKey)
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		defer res.Body.Close()
		if res.StatusCode != 200 {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("list ?%s: %d %s", query, res.StatusCode, b)
		}
		var out []struct {
			SandboxID string `json:"sandboxID"`
		}
		must(t, json.NewDecoder(res.Body).Decode(&out))
		var got []string
		for _, s := range out {
			got = append(got, s.SandboxID)
		}
		return got, res.Header
	}
	for _, order := range []string{"asc", "desc"} {
		all, h := list("order=" + order)
		if len(all) != 5 || h.Get("X-Next-Token") != "" || h.Get("X-Total-Running") != "5" {
			t.Fatalf("one page (%s): %v, next %q, running %q", order, all, h.Get("X-Next-Token"), h.Get("X-Total-Running"))
		}
		var paged []string
		tok := ""
		for range 10 {
			q := "limit=2&order=" + order
			if tok != "" {
				q += "&nextToken=" + tok
			}
			page, h := list(q)
			if len(page) > 2 {
				t.Fatalf("page of %d with limit 2", len(page))
			}
			paged = append(paged, page...)
			if tok = h.Get("X-Next-Token"); tok == "" {
				break
			}
		}
		if !slices.Equal(paged, all) {
			t.Errorf("pages (%s) %v, one list %v", order, paged, all)
		}
	}
	// A sandbox removed between pages does not shift the next page.
	first, h := list("limit=2&order=asc")
	must(t, r.rt.Remove(ctx, first[0], true))
	rest, _ := list("limit=10&order=asc&nextToken=" + h.Get("X-Next-Token"))
	all, _ := list("order=asc")
	if !slices.Equal(rest, all[1:]) {
		t.Errorf("after removing %s: the next page %v, want %v", first[0], rest, all[1:])
	}
	if status, m := do(t, r, "GET", "/v2/sandboxes?nextToken=bm90LWEtdG9rZW4", testKey, ""); status != 400 || m["error_code"] != "bad_request" {
		t.Errorf("a forged token: %d %v", status, m)
	}
}
