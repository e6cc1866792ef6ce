package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
)

// E2B's headers naming the sandbox and port of a request sent to a single
// sandbox URL (the SDKs' sandboxUrl / E2B_SANDBOX_URL).
const (
	headerSandboxID   = "E2b-Sandbox-Id"
	headerSandboxPort = "E2b-Sandbox-Port"
)

// sandboxTarget reports whether r is sandbox traffic, and for which sandbox
// and port: its Host is <port>-<id>.<domain>, or it carries E2B's sandbox
// headers.
func (s *Server) sandboxTarget(r *http.Request) (id string, port uint32, ok bool) {
	if hid := r.Header.Get(headerSandboxID); hid != "" {
		p, err := strconv.ParseUint(r.Header.Get(headerSandboxPort), 10, 16)
		if err != nil || p == 0 {
			p = agent.Port
		}
		return hid, uint32(p), true
	}
	if s.domain == "" {
		return "", 0, false
	}
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, ok := strings.CutSuffix(host, "."+s.domain)
	if !ok || strings.Contains(label, ".") {
		return "", 0, false
	}
	ps, sid, ok := strings.Cut(label, "-")
	p, err := strconv.ParseUint(ps, 10, 16)
	if !ok || err != nil || p == 0 || sid == "" {
		return "", 0, false
	}
	return sid, uint32(p), true
}

// proxy forwards sandbox traffic to the guest agent over the sandbox's
// vsock: one HTTP transport whose "host" is the sandbox's ID, so idle
// connections are kept per sandbox.
type proxy struct {
	s  *Server
	tr *http.Transport
	rp *httputil.ReverseProxy
}

// proxyDialTimeout bounds connecting to a sandbox's agent (the socket and
// the hybrid-vsock handshake).
const proxyDialTimeout = 5 * time.Second

func newProxy(s *Server) *proxy {
	p := &proxy{s: s}
	p.tr = &http.Transport{
		DialContext:         p.dial,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(target)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = t.id + ".sandbox:" + strconv.Itoa(int(t.port))
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Del(headerSandboxID)
			pr.Out.Header.Del(headerSandboxPort)
			pr.SetXForwarded()
		},
		Transport:     p.tr,
		FlushInterval: -1, // stream process output as it comes
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			s.log.Debug("sandbox traffic", "host", r.Host, "path", r.URL.Path, "err", err)
			if errors.Is(err, agent.ErrPortClosed) || errors.Is(err, errNoForward) {
				writeE2BError(w, http.StatusBadGateway, "port_not_forwarded", err.Error())
				return
			}
			writeE2BError(w, http.StatusBadGateway, "sandbox_unreachable", err.Error())
		},
	}
	return p
}

type targetKey struct{}

// target is where a proxied request goes.
type target struct {
	id   string
	port uint32
}

// errNoForward: the sandbox's agent does not serve the port forward (an
// agent older than it, or a guest without kindling's agent).
var errNoForward = errors.New("the sandbox's agent does not forward ports (vsock port " + strconv.Itoa(agent.ForwardPort) + " is closed): only the agent's port " + strconv.Itoa(agent.Port) + " is reachable; update the guest's kindling-agent")

// serve forwards r into sandbox id's port.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request, id string, port uint32) {
	if err := store.ValidateID(id); err != nil {
		writeE2BError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if port == 0 || port > 0xffff {
		writeE2BError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("port %d: give 1 to 65535", port))
		return
	}
	in, err := p.s.rt.Inspect(r.Context(), id)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	switch {
	case in.VsockSocket == "":
		writeE2BError(w, http.StatusBadGateway, "sandbox_unreachable", fmt.Sprintf("sandbox %q has no vsock device: its agent cannot be reached", id))
		return
	case in.Status == sandbox.Paused:
		writeE2BError(w, http.StatusConflict, "sandbox_paused", fmt.Sprintf("sandbox %q is paused: resume it (connect) first", id))
		return
	case in.Status != sandbox.Running:
		writeE2BError(w, http.StatusBadGateway, "sandbox_unreachable", fmt.Sprintf("sandbox %q is %s", id, in.Status))
		return
	}
	p.forward(w, r, target{id: id, port: port})
}

// forward sends r to t and its answer back.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request, t target) {
	// Go's HTTP/1 server reads what is left of a request's body and closes
	// it when the response's header is written. The transport may not have
	// finished with that body by then, even when all its bytes are sent:
	// after them it reads once more to see the end. Should the agent
	// answer first (a command's first output), that read fails, and the
	// transport closes the agent's connection in the middle of the
	// response (the E2B SDK saw "terminated"). Full duplex leaves the body
	// to the transport until the handler returns. (HTTP/2 is full duplex
	// already and answers with an error, ignored.)
	_ = http.NewResponseController(w).EnableFullDuplex()
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)))
}

// dial connects to the agent of the sandbox named by addr's host
// ("<id>.sandbox:<port>"): its vsock socket, then "CONNECT <port>\n"
// answered by "OK <n>\n".
func (p *proxy) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	id, _ := strings.CutSuffix(host, ".sandbox")
	port, err := strconv.ParseUint(ps, 10, 32)
	if err != nil {
		return nil, err
	}
	in, err := p.s.rt.Inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	if in.VsockSocket == "" {
		return nil, fmt.Errorf("sandbox %q has no vsock device", id)
	}
	ctx, cancel := context.WithTimeout(ctx, proxyDialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", in.VsockSocket)
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: dial its vsock: %w", id, err)
	}
	if port == agent.Port {
		if err := agent.VsockConnect(ctx, conn, agent.Port); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("sandbox %q: %w", id, err)
		}
		return conn, nil
	}
	// Any other port: the agent's forward to the guest's loopback.
	if err := agent.VsockConnect(ctx, conn, agent.ForwardPort); err != nil {
		_ = conn.Close()
		if errors.Is(err, agent.ErrNoListener) {
			return nil, fmt.Errorf("sandbox %q, port %d: %w", id, port, errNoForward)
		}
		return nil, fmt.Errorf("sandbox %q: %w", id, err)
	}
	if err := agent.RequestForward(ctx, conn, uint16(port)); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("sandbox %q: %w", id, err)
	}
	return conn, nil
}

// forget closes the idle connections to a sandbox that is gone.
func (p *proxy) forget(string) { p.tr.CloseIdleConnections() }

func (p *proxy) close() { p.tr.CloseIdleConnections() }
