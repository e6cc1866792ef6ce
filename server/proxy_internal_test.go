package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A sandbox's answer may begin before the request's body has ended (a
// command's output streams while its request is still being forwarded):
// the proxy must keep forwarding the body after it has sent the answer's
// header. Before full duplex, Go's server took the body back at the
// header (and, when the body had ended, closed it under the transport,
// which then closed the agent's connection mid-answer).
func TestProxyBodyAfterAnswerBegins(t *testing.T) {
	// The "agent": answers as soon as it has the body's first part, then
	// reports the rest of the body once it ends.
	agent := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		first := make([]byte, len("first;"))
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "got "+string(first)+"\n")
		w.(http.Flusher).Flush()
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			_, _ = io.WriteString(w, "body: "+err.Error()+"\n")
			return
		}
		_, _ = io.WriteString(w, "then "+string(rest)+"\n")
	}))
	agent.Start()
	defer agent.Close()

	p := newProxy(&Server{log: slog.New(slog.DiscardHandler)})
	p.tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", agent.Listener.Addr().String())
	}
	defer p.close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.forward(w, r, target{id: "sbx", port: 49983})
	}))
	defer front.Close()

	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// A chunked body whose last part is sent only once the answer began.
	if _, err := io.WriteString(conn, "POST /run HTTP/1.1\r\nHost: 49983-sbx.test\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst;\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the request's body is still open: %v", err)
	}
	defer res.Body.Close()
	rb := bufio.NewReader(res.Body)
	line, err := rb.ReadString('\n')
	if err != nil {
		t.Fatalf("first line of the answer: %q, %v", line, err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "5\r\nlast.\r\n0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rb)
	got := line + string(rest)
	if err != nil || got != "got first;\nthen last.\n" {
		t.Fatalf("answer %q (%v), want the first part, then the rest of the body", got, err)
	}
}
