package network

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// RedirectLoopback sends a connection to any loopback port of the
// namespace to the one listener, which reads the port asked for with
// OriginalDst; the listener's own port is not redirected; after
// RemoveLoopbackRedirect loopback is plain again, and a second removal is
// fine. Bad input is refused before anything is made.
func TestRedirectLoopback(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "loop")
	var ln net.Listener
	if err := inNS(ns, func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, err := OriginalDst(c.(*net.TCPConn))
			if err != nil {
				fmt.Fprintf(c, "error: %v", err)
			} else {
				fmt.Fprintf(c, "to %s", dst)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })

	if err := RedirectLoopback("", port); !errors.Is(err, ErrInvalid) {
		t.Errorf("RedirectLoopback of the caller's namespace: %v, want ErrInvalid", err)
	}
	if err := RedirectLoopback(ns, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("RedirectLoopback to port 0: %v, want ErrInvalid", err)
	}
	if err := RedirectLoopback(ns, port); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = RemoveLoopbackRedirect(ns) })
	for _, addr := range []string{"127.0.0.1:8080", "localhost:22", "127.0.0.53:53"} {
		got, err := fetch(ns, addr, 0)
		host, p, _ := net.SplitHostPort(addr)
		want := "to " + net.JoinHostPort(strings.Replace(host, "localhost", "127.0.0.1", 1), p)
		if err != nil || got != want {
			t.Errorf("connect to %s in the namespace: %q, %v; want %q", addr, got, err, want)
		}
	}
	// The listener's own port is reached directly (its original
	// destination is itself).
	if got, err := fetch(ns, ln.Addr().String(), 0); err != nil || got != "to "+ln.Addr().String() {
		t.Errorf("connect to the listener itself: %q, %v", got, err)
	}
	// Nothing outside the namespace changed.
	if got, err := fetch("", "127.0.0.1:1", 0); err == nil {
		t.Errorf("port 1 of the caller's loopback answered %q: the redirect leaked out of the namespace", got)
	}

	if err := RemoveLoopbackRedirect(ns); err != nil {
		t.Fatal(err)
	}
	if got, err := fetch(ns, "127.0.0.1:8080", 0); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("connect to 127.0.0.1:8080 after RemoveLoopbackRedirect: %q, %v; want refused", got, err)
	}
	if err := RemoveLoopbackRedirect(ns); err != nil {
		t.Errorf("second RemoveLoopbackRedirect: %v", err)
	}
	if err := RemoveLoopbackRedirect(ns + "-gone"); err != nil {
		t.Errorf("RemoveLoopbackRedirect of a namespace that is gone: %v", err)
	}
}
