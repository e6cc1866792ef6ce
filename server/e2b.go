package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/agent"
	agentserver "github.com/kindling-vm/kindling/agent/server"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// E2B's sandbox lifetime bounds, in seconds.
const (
	e2bDefaultTimeout = 15
	e2bMaxTimeout     = 24 * 60 * 60
)

// e2bClientID is the (deprecated) clientID E2B answers carry.
const e2bClientID = "kindling"

// maxEnvVars bounds the environment variables of a create.
const maxEnvVars = 1000

// agentReadyTimeout bounds the wait for a new sandbox's agent.
const agentReadyTimeout = 30 * time.Second

// e2bRoutes registers the E2B-compatible API on mux.
func (s *Server) e2bRoutes(mux *http.ServeMux) {
	route := func(pattern string, methods map[string]http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			h, ok := methods[r.Method]
			if !ok {
				allow := make([]string, 0, len(methods))
				for m := range methods {
					allow = append(allow, m)
				}
				slices.Sort(allow)
				w.Header().Set("Allow", strings.Join(allow, ", "))
				writeE2BError(w, http.StatusMethodNotAllowed, codeMethod, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
				return
			}
			if pattern != "/health" && !s.validKey(r.Header.Get("X-API-Key")) {
				writeE2BError(w, http.StatusUnauthorized, codeUnauthorized, "missing or wrong X-API-Key")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
			h(w, r)
		})
	}
	route("/health", map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }})
	route("/sandboxes", map[string]http.HandlerFunc{"GET": s.e2bList, "POST": s.e2bCreate})
	route("/v2/sandboxes", map[string]http.HandlerFunc{"GET": s.e2bList, "POST": s.e2bCreate})
	route("/sandboxes/{id}", map[string]http.HandlerFunc{"GET": s.e2bGet, "DELETE": s.e2bKill})
	route("/sandboxes/{id}/timeout", map[string]http.HandlerFunc{"POST": s.e2bTimeout})
	route("/sandboxes/{id}/network", map[string]http.HandlerFunc{"PUT": s.e2bSetNetwork})
	route("/sandboxes/{id}/pause", map[string]http.HandlerFunc{"POST": s.e2bPause})
	route("/sandboxes/{id}/resume", map[string]http.HandlerFunc{"POST": s.e2bResume})
	route("/sandboxes/{id}/connect", map[string]http.HandlerFunc{"POST": s.e2bConnect})
	route("/v2/sandboxes/{id}/connect", map[string]http.HandlerFunc{"POST": s.e2bConnect})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeE2BError(w, http.StatusNotFound, codeNotServed, fmt.Sprintf("%s %s is not served by kindlingd", r.Method, r.URL.Path))
	})
}

// decodeBody decodes r's JSON body into v. An empty body leaves v as it is
// when optional; trailing data after the JSON value is an error.
func decodeBody(r *http.Request, v any, optional bool) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return fmt.Errorf("no request body: give a JSON object: %w", sandbox.ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %v: %w", err, sandbox.ErrInvalid)
	}
	if dec.More() {
		return fmt.Errorf("request body: data after the JSON object: %w", sandbox.ErrInvalid)
	}
	return nil
}

// newSandboxBody is E2B's NewSandbox.
type newSandboxBody struct {
	TemplateID string            `json:"templateID"`
	Timeout    *int64            `json:"timeout"`
	AutoPause  bool              `json:"autoPause"`
	Metadata   map[string]string `json:"metadata"`
	EnvVars    map[string]string `json:"envVars"`
	Secure     *bool             `json:"secure"`
	// AllowInternetAccess and Network's allowOut and denyOut set the
	// egress policy of a sandbox whose template has a slot network
	// (parseE2BEgress); validate fills egress from them.
	AllowInternetAccess *bool       `json:"allow_internet_access"`
	Network             *e2bNetwork `json:"network"`
	egress              *e2bEgress
	// Settings kindlingd does not have; a request that sets them is
	// refused rather than half served.
	VolumeMounts json.RawMessage `json:"volumeMounts"`
	MCP          json.RawMessage `json:"mcp"`
	IAM          json.RawMessage `json:"iam"`
	AutoResume   *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume"`
}

// validate checks a create request, before anything is done.
func (b *newSandboxBody) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf(format+": %w", append(args, sandbox.ErrInvalid)...)
	}
	if b.TemplateID == "" {
		return bad("templateID: required (a kindling template's name)")
	}
	if err := validTimeout(b.Timeout); err != nil {
		return err
	}
	for k, v := range b.Metadata {
		if err := sandbox.ValidateLabel(k, v); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
	}
	if len(b.EnvVars) > maxEnvVars {
		return bad("envVars: %d variables: at most %d", len(b.EnvVars), maxEnvVars)
	}
	for k, v := range b.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return bad("envVars: %q: a name must be non-empty without '=' or NUL, a value without NUL", k)
		}
	}
	var err error
	if b.egress, err = parseE2BEgress(b.Network, b.AllowInternetAccess); err != nil {
		return err
	}
	for name, raw := range map[string]json.RawMessage{"volumeMounts": b.VolumeMounts, "mcp": b.MCP, "iam": b.IAM} {
		if len(raw) > 0 && string(raw) != "null" {
			return fmt.Errorf("%s: not supported by kindlingd: %w", name, sandbox.ErrNotSupported)
		}
	}
	if b.AutoResume != nil && b.AutoResume.Enabled {
		return fmt.Errorf("autoResume: not supported by kindlingd (resume with connect): %w", sandbox.ErrNotSupported)
	}
	return nil
}

func validTimeout(t *int64) error {
	if t != nil && (*t < 0 || *t > e2bMaxTimeout) {
		return fmt.Errorf("timeout %d: give 0 to %d seconds: %w", *t, e2bMaxTimeout, sandbox.ErrInvalid)
	}
	return nil
}

// timeoutOr returns t seconds as a duration, or def seconds when t is nil.
func timeoutOr(t *int64, def int64) time.Duration {
	if t == nil {
		return time.Duration(def) * time.Second
	}
	return time.Duration(*t) * time.Second
}

// e2bSandbox is E2B's Sandbox (what a create, resume or connect answers).
type e2bSandbox struct {
	TemplateID      string  `json:"templateID"`
	SandboxID       string  `json:"sandboxID"`
	ClientID        string  `json:"clientID"`
	EnvdVersion     string  `json:"envdVersion"`
	EnvdAccessToken string  `json:"envdAccessToken,omitempty"`
	Domain          *string `json:"domain"`
}

func (s *Server) e2bSandbox(l lease) e2bSandbox {
	return e2bSandbox{TemplateID: l.Template, SandboxID: l.ID, ClientID: e2bClientID,
		EnvdVersion: agentserver.EnvdVersion, EnvdAccessToken: l.AccessToken, Domain: s.domainPtr()}
}

func (s *Server) domainPtr() *string {
	if s.domain == "" {
		return nil
	}
	d := s.domain
	return &d
}

func (s *Server) e2bCreate(w http.ResponseWriter, r *http.Request) {
	var body newSandboxBody
	if err := decodeBody(r, &body, false); err != nil {
		writeRuntimeError(w, err)
		return
	}
	if err := body.validate(); err != nil {
		writeRuntimeError(w, err)
		return
	}
	if s.tpl == nil {
		writeE2BError(w, http.StatusBadRequest, codeNotSupported, "this server serves no templates")
		return
	}
	tpl, err := s.tpl.Inspect(r.Context(), body.TemplateID)
	if err != nil {
		writeRuntimeError(w, fmt.Errorf("template %q: %w", body.TemplateID, err))
		return
	}
	if tpl.VsockCID == 0 {
		writeE2BError(w, http.StatusBadRequest, codeBadRequest,
			fmt.Sprintf("template %q has no vsock device: its sandboxes' agent cannot be reached (make it from a sandbox with --vsock)", body.TemplateID))
		return
	}
	var egress *sandbox.EgressChange
	if body.egress.set() {
		if err := s.needSlot(body.TemplateID, tpl.Dir); err != nil {
			writeRuntimeError(w, err)
			return
		}
		ch := body.egress.change(templateEgress(tpl.Dir), false)
		egress = &ch
	}
	l, err := s.createE2B(r.Context(), body, egress)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.e2bSandbox(l))
}

// createE2B clones the template, gives it egress (when not nil), gives its
// agent the request's environment and a fresh access token, and records
// the sandbox's lease. A sandbox that fails on the way is removed.
//
// A warm pool's clone gets its egress policy before it resumes; a fresh
// clone only once it runs (template.Store.Run starts it), so its guest
// runs for the few milliseconds between under its template's policy.
func (s *Server) createE2B(ctx context.Context, body newSandboxBody, egress *sandbox.EgressChange) (_ lease, err error) {
	var prepare func(context.Context, string) error
	if egress != nil {
		prepare = func(ctx context.Context, id string) error { return s.setE2BEgress(ctx, id, *egress) }
	}
	in, ok, err := s.pools.claim(ctx, body.TemplateID, prepare)
	if err != nil {
		return lease{}, err
	}
	if !ok {
		if in, err = s.tpl.Run(ctx, body.TemplateID, template.CloneOptions{}); err != nil {
			return lease{}, err
		}
	}
	defer func() {
		if err != nil {
			bg := context.WithoutCancel(ctx)
			err = errors.Join(err, s.rt.Remove(bg, in.ID, true), s.leases.drop(bg, in.ID))
		}
	}()
	if egress != nil && !ok {
		if err := s.setE2BEgress(ctx, in.ID, *egress); err != nil {
			return lease{}, err
		}
	}
	// The agent's token: the runtime's own for the sandbox when the runtime
	// keeps one (then the runtime's guest calls and the E2B client share
	// it), else a fresh one the server gives the agent.
	var tok, current string
	if ta, ok := any(s.rt).(agentTokener); ok {
		if tok, err = ta.AgentToken(ctx, in.ID); err != nil {
			return lease{}, err
		}
		current = tok
	} else {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		tok = hex.EncodeToString(b)
	}
	l := lease{ID: in.ID, Template: body.TemplateID, AccessToken: tok, E2B: true,
		Metadata: body.Metadata, StartedAt: time.Now().UTC(), OnTimeout: onTimeoutKill}
	if body.AutoPause {
		l.OnTimeout = onTimeoutPause
	}
	if err := s.initAgent(ctx, in, body.EnvVars, current, tok); err != nil {
		return lease{}, err
	}
	l.EndAt = l.StartedAt.Add(timeoutOr(body.Timeout, e2bDefaultTimeout))
	if err := s.leases.put(ctx, l); err != nil {
		return lease{}, err
	}
	return l, nil
}

// agentTokener is what a runtime that keeps an access token per agent
// sandbox offers (the runtime's guest capability): the token the
// sandbox's agent requires.
type agentTokener interface {
	AgentToken(ctx context.Context, id string) (string, error)
}

// initAgent waits for a new sandbox's agent and re-initialises it: the
// environment of later processes and the access token every request must
// then carry. current is the token the agent requires now ("" for none).
func (s *Server) initAgent(ctx context.Context, in sandbox.Info, env map[string]string, current, token string) error {
	ctx, cancel := context.WithTimeout(ctx, agentReadyTimeout)
	defer cancel()
	cfg := agent.Config{VsockPath: in.VsockSocket, AccessToken: current, DialTimeout: time.Second, RequestTimeout: 10 * time.Second}
	var c *agent.Client
	var err error
	for {
		if c, err = agent.Dial(ctx, cfg); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %q: its agent did not answer within %v: %w", in.ID, agentReadyTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer c.Close()
	if err := c.Init(ctx, agent.InitConfig{Env: env, AccessToken: token}); err != nil {
		return fmt.Errorf("sandbox %q: initialise its agent: %w", in.ID, err)
	}
	return nil
}

// e2bState is the E2B state of a sandbox: running or paused, "" for one
// E2B would not show (created, exited).
func e2bState(st sandbox.Status) string {
	switch st {
	case sandbox.Running, sandbox.Orphaned:
		return "running"
	case sandbox.Paused:
		return "paused"
	}
	return ""
}

// e2bDetail is E2B's SandboxDetail and ListedSandbox.
type e2bDetail struct {
	TemplateID      string            `json:"templateID"`
	SandboxID       string            `json:"sandboxID"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	DiskSizeMB      int               `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	State           string            `json:"state"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain,omitempty"`
	// AllowInternetAccess and Network say the egress policy, for a
	// sandbox that has one (e2bNetworkOf).
	AllowInternetAccess *bool           `json:"allowInternetAccess,omitempty"`
	Network             *e2bNetworkView `json:"network,omitempty"`
}

func (s *Server) detail(in sandbox.Info, l lease, withToken bool) e2bDetail {
	d := e2bDetail{TemplateID: l.Template, SandboxID: in.ID, ClientID: e2bClientID, StartedAt: in.StartedAt.UTC(),
		EndAt: l.EndAt.UTC(), CPUCount: max(in.Spec.VCPUs, 1), MemoryMB: in.Spec.MemoryMiB, Metadata: metadataOf(in, l),
		State: e2bState(in.Status), EnvdVersion: agentserver.EnvdVersion, Domain: s.domainPtr()}
	if withToken {
		d.EnvdAccessToken = l.AccessToken
	}
	d.AllowInternetAccess, d.Network = e2bNetworkOf(in)
	return d
}

// metadataOf is a sandbox's E2B metadata: its lease's for a sandbox made
// through the E2B API, else its labels.
func metadataOf(in sandbox.Info, l lease) map[string]string {
	if l.E2B {
		return l.Metadata
	}
	return in.Spec.Labels
}

// sandboxID is the request's {id}, checked.
func sandboxID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := store.ValidateID(id); err != nil {
		return "", err
	}
	return id, nil
}

// shown returns sandbox id's Info and lease, or ErrNotFound for a sandbox
// E2B would not show (not running or paused).
func (s *Server) shown(ctx context.Context, id string) (sandbox.Info, lease, error) {
	in, err := s.rt.Inspect(ctx, id)
	if err != nil {
		return sandbox.Info{}, lease{}, err
	}
	if e2bState(in.Status) == "" {
		return sandbox.Info{}, lease{}, fmt.Errorf("sandbox %q is %s: %w", id, in.Status, sandbox.ErrNotFound)
	}
	if s.pools.isReady(id) {
		return sandbox.Info{}, lease{}, fmt.Errorf("sandbox %q is a warm pool's clone: %w", id, sandbox.ErrNotFound)
	}
	l, err := s.leases.get(id)
	return in, l, err
}

func (s *Server) e2bGet(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	in, l, err := s.shown(r.Context(), id)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.detail(in, l, true))
}

// maxListLimit bounds a list's limit parameter.
const maxListLimit = 10000

func (s *Server) e2bList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var labels map[string]string
	if m := q.Get("metadata"); m != "" {
		vals, err := url.ParseQuery(m)
		if err != nil {
			writeE2BError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("metadata %q: give URL-encoded key=value pairs joined by &", m))
			return
		}
		labels = map[string]string{}
		for k, vs := range vals {
			if err := sandbox.ValidateLabel(k, vs[0]); err != nil {
				writeRuntimeError(w, fmt.Errorf("metadata: %w", err))
				return
			}
			labels[k] = vs[0]
		}
	}
	states := map[string]bool{}
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			if st != "running" && st != "paused" {
				writeE2BError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("state %q: give running or paused", st))
				return
			}
			states[st] = true
		}
	}
	limit := maxListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			writeE2BError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("limit %q: give 1 to %d", v, maxListLimit))
			return
		}
		limit = n
	}
	var after *listCursor
	if v := q.Get("nextToken"); v != "" {
		c, err := parseListCursor(v)
		if err != nil {
			writeE2BError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("nextToken %q: not a token this server handed out (X-Next-Token of a list)", v))
			return
		}
		after = &c
	}
	var startedAfter time.Time
	if v := q.Get("startedAfter"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeE2BError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("startedAfter %q: give an RFC 3339 time", v))
			return
		}
		startedAfter = t
	}
	asc := false
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		asc = true
	default:
		writeE2BError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("order %q: give asc or desc", o))
		return
	}
	tplFilter := q.Get("template")
	infos, err := s.lister.list(r.Context())
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	out := []e2bDetail{}
	for _, in := range infos {
		st := e2bState(in.Status)
		if st == "" || (len(states) > 0 && !states[st]) || s.pools.isReady(in.ID) {
			continue
		}
		l, _ := s.leases.get(in.ID)
		if tplFilter != "" && l.Template != tplFilter {
			continue
		}
		if !matches(metadataOf(in, l), labels) {
			continue
		}
		d := s.detail(in, l, false)
		if !startedAfter.IsZero() && d.StartedAt.Before(startedAfter) {
			continue
		}
		out = append(out, d)
	}
	// Sorted by start time (newest first unless asc), then ID: a total
	// order, so that a cursor (the last item's start and ID) says where
	// the next page begins even as sandboxes come and go meanwhile.
	cmp := func(a, b e2bDetail) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			if asc {
				return c
			}
			return -c
		}
		return strings.Compare(a.SandboxID, b.SandboxID)
	}
	slices.SortFunc(out, cmp)
	if len(states) == 0 || states["running"] {
		running := 0
		for _, d := range out {
			if d.State == "running" {
				running++
			}
		}
		w.Header().Set("X-Total-Running", strconv.Itoa(running))
	}
	if after != nil {
		key := e2bDetail{StartedAt: after.startedAt, SandboxID: after.id}
		i, _ := slices.BinarySearchFunc(out, key, cmp)
		for i < len(out) && cmp(out[i], key) <= 0 {
			i++
		}
		out = out[i:]
	}
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		w.Header().Set("X-Next-Token", listCursor{startedAt: last.StartedAt, id: last.SandboxID}.String())
	}
	writeJSON(w, http.StatusOK, out)
}

// listCursor is where a page of the E2B list ends: its last sandbox's
// start time and ID. Its token is opaque to clients (base64 of
// "<unix ns>:<id>").
type listCursor struct {
	startedAt time.Time
	id        string
}

func (c listCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.startedAt.UnixNano(), 10) + ":" + c.id))
}

func parseListCursor(tok string) (listCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return listCursor{}, err
	}
	ns, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || store.ValidateID(id) != nil {
		return listCursor{}, fmt.Errorf("malformed list token")
	}
	return listCursor{startedAt: time.Unix(0, n), id: id}, nil
}

func (s *Server) e2bKill(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	if err := s.remove(r.Context(), id, true); err != nil {
		writeRuntimeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// timeoutBody is E2B's SandboxTimeoutRequest, ConnectSandbox and
// ResumedSandbox.
type timeoutBody struct {
	Timeout   *int64 `json:"timeout"`
	AutoPause *bool  `json:"autoPause"`
}

func (s *Server) e2bTimeout(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err == nil {
		var body timeoutBody
		if err = decodeBody(r, &body, false); err == nil {
			err = s.setTimeoutE2B(r.Context(), id, body, false)
		}
	}
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// setTimeoutE2B sets a sandbox's end to now + the body's timeout; with
// extendOnly, a later end already set is kept (connect "only extends").
func (s *Server) setTimeoutE2B(ctx context.Context, id string, body timeoutBody, extendOnly bool) error {
	if body.Timeout == nil {
		return fmt.Errorf("timeout: required (seconds from now): %w", sandbox.ErrInvalid)
	}
	if err := validTimeout(body.Timeout); err != nil {
		return err
	}
	if _, _, err := s.shown(ctx, id); err != nil {
		return err
	}
	l, err := s.leases.get(id)
	if err != nil {
		return err
	}
	end := time.Now().Add(timeoutOr(body.Timeout, e2bDefaultTimeout)).UTC()
	if !extendOnly || l.EndAt.IsZero() || end.After(l.EndAt) {
		l.EndAt = end
	}
	if l.OnTimeout == "" {
		l.OnTimeout = onTimeoutKill
	}
	if body.AutoPause != nil {
		l.OnTimeout = map[bool]string{true: onTimeoutPause, false: onTimeoutKill}[*body.AutoPause]
	}
	return s.leases.put(ctx, l)
}

func (s *Server) e2bPause(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	in, l, err := s.shown(r.Context(), id)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	if in.Status == sandbox.Paused {
		writeE2BError(w, http.StatusConflict, codeConflict, fmt.Sprintf("sandbox %q is already paused", id))
		return
	}
	if err := s.rt.Pause(r.Context(), id); err != nil {
		writeRuntimeError(w, err)
		return
	}
	// A paused sandbox does not expire; a resume sets a new end.
	if !l.EndAt.IsZero() {
		l.EndAt = time.Time{}
		if err := s.leases.put(r.Context(), l); err != nil {
			writeRuntimeError(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// resumeE2B resumes a paused sandbox (a running one is left running) and
// sets its end; it reports whether it resumed.
func (s *Server) resumeE2B(ctx context.Context, id string, body timeoutBody, extendOnly bool) (bool, lease, error) {
	in, _, err := s.shown(ctx, id)
	if err != nil {
		return false, lease{}, err
	}
	resumed := false
	if in.Status == sandbox.Paused {
		if err := s.rt.Resume(ctx, id); err != nil {
			return false, lease{}, err
		}
		resumed = true
	}
	if body.Timeout == nil {
		def := int64(e2bDefaultTimeout)
		body.Timeout = &def
	}
	if err := s.setTimeoutE2B(ctx, id, body, extendOnly && !resumed); err != nil {
		return resumed, lease{}, err
	}
	l, err := s.leases.get(id)
	return resumed, l, err
}

func (s *Server) e2bResume(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	var body timeoutBody
	if err := decodeBody(r, &body, true); err != nil {
		writeRuntimeError(w, err)
		return
	}
	if in, _, err := s.shown(r.Context(), id); err == nil && in.Status != sandbox.Paused {
		writeE2BError(w, http.StatusConflict, codeConflict, fmt.Sprintf("sandbox %q is already running", id))
		return
	}
	_, l, err := s.resumeE2B(r.Context(), id, body, false)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.e2bSandbox(l))
}

func (s *Server) e2bConnect(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	var body timeoutBody
	if err := decodeBody(r, &body, false); err != nil {
		writeRuntimeError(w, err)
		return
	}
	if body.Timeout == nil {
		writeE2BError(w, http.StatusBadRequest, codeBadRequest, "timeout: required (seconds from now)")
		return
	}
	body.AutoPause = nil
	resumed, l, err := s.resumeE2B(r.Context(), id, body, true)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	status := http.StatusOK
	if resumed {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.e2bSandbox(l))
}

// matches reports whether md holds every pair of want.
func matches(md, want map[string]string) bool {
	for k, v := range want {
		if have, ok := md[k]; !ok || have != v {
			return false
		}
	}
	return true
}
