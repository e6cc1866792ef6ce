package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/server"
)

// The port forward bridges a host connection to a TCP port of the
// loopback: here the test's own, on a Unix socket standing in for vsock.
func TestServeForward(t *testing.T) {
	// An echo server that upper-cases, on a free loopback port.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					_, _ = io.WriteString(c, strings.ToUpper(s.Text())+"\n")
				}
			}()
		}
	}()
	port := uint16(tl.Addr().(*net.TCPAddr).Port)
	// A port nothing listens on.
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := uint16(cl.Addr().(*net.TCPAddr).Port)
	cl.Close()

	sock := filepath.Join(t.TempDir(), "fwd")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.ServeForward(ctx, ln, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeForward: %v", err)
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()

	c := dial()
	if err := agent.RequestForward(rctx, c, port); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, w := range []string{"hello", "again"} {
		if _, err := io.WriteString(c, w+"\n"); err != nil {
			t.Fatal(err)
		}
		if got, err := br.ReadString('\n'); err != nil || got != strings.ToUpper(w)+"\n" {
			t.Errorf("echo of %q: %q, %v", w, got, err)
		}
	}
	c.Close()

	c = dial()
	if err := agent.RequestForward(rctx, c, closed); !errors.Is(err, agent.ErrPortClosed) {
		t.Errorf("forward to a closed port: %v, want ErrPortClosed", err)
	}
	c.Close()

	c = dial()
	if _, err := io.WriteString(c, "FORWARD nope\n"); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(line, "ERR ") {
		t.Errorf("a bad request was answered %q", line)
	}
	c.Close()
	if err := agent.RequestForward(rctx, dial(), 0); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("port 0: %v, want ErrInvalid", err)
	}

	// A bridge under way ends with the server.
	c = dial()
	defer c.Close()
	if err := agent.RequestForward(rctx, c, port); err != nil {
		t.Fatal(err)
	}
	cancel()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Errorf("read after the server ended: %v, want the end of the connection", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
