package shim

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
)

// dialGuestPort against a stand-in for Firecracker's hybrid vsock and the
// agent's forward: the handshake and the request it sends, the bytes after
// them, and each way it can fail.
func TestDialGuestPort(t *testing.T) {
	tests := []struct {
		name string
		// serve answers after reading the CONNECT line (the FORWARD line,
		// if any, is for it to read).
		serve   func(r *bufio.Reader, c net.Conn)
		wantErr string
		closed  bool // the error matches agent.ErrPortClosed
	}{
		{name: "forwarded", serve: func(r *bufio.Reader, c net.Conn) {
			io.WriteString(c, "OK 1073741824\n")
			if l, _ := r.ReadString('\n'); l != "FORWARD 8080\n" {
				io.WriteString(c, "ERR bad request "+l)
				return
			}
			io.WriteString(c, "OK\n")
			l, _ := r.ReadString('\n')
			io.WriteString(c, strings.ToUpper(l))
		}},
		{name: "guest port closed", closed: true, wantErr: "connection refused", serve: func(r *bufio.Reader, c net.Conn) {
			io.WriteString(c, "OK 1\n")
			r.ReadString('\n')
			io.WriteString(c, "ERR dial tcp 127.0.0.1:8080: connect: connection refused\n")
		}},
		{name: "agent without a forward", wantErr: "nothing listens on the vsock port", serve: func(*bufio.Reader, net.Conn) {}},
		{name: "bad handshake", wantErr: "unexpected handshake answer", serve: func(_ *bufio.Reader, c net.Conn) {
			io.WriteString(c, "NOPE\n")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "v.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- err.Error()
					return
				}
				defer c.Close()
				r := bufio.NewReader(c)
				l, _ := r.ReadString('\n')
				done <- l
				tt.serve(r, c)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := dialGuestPort(ctx, sock, 8080)
			if got := <-done; got != "CONNECT 49984\n" {
				t.Errorf("handshake %q, want CONNECT %d", got, agent.ForwardPort)
			}
			if tt.wantErr != "" {
				if err == nil {
					conn.Close()
					t.Fatalf("dialGuestPort succeeded, want an error with %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, agent.ErrPortClosed) != tt.closed {
					t.Errorf("error %v, want %q (ErrPortClosed %v)", err, tt.wantErr, tt.closed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, "ping\n")
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := bufio.NewReader(conn).ReadString('\n'); got != "PING\n" {
				t.Errorf("through the forward: %q, %v; want PING", got, err)
			}
		})
	}
}
