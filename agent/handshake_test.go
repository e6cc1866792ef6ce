package agent

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzHandshake feeds Firecracker's side of the hybrid-vsock handshake: the
// handshake succeeds only on an "OK <port>" line.
func FuzzHandshake(f *testing.F) {
	for _, s := range []string{"OK 1073741824\n", "OK\n", "NOPE 1\n", "", "OK 12 extra\n", "OK 99999999999999999999\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		host, fc := net.Pipe()
		defer host.Close()
		go func() {
			defer fc.Close()
			buf := make([]byte, 64)
			_, _ = fc.Read(buf) // the CONNECT line
			_, _ = fc.Write(answer)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := handshake(ctx, host, 49983); err == nil {
			line, _, found := bytes.Cut(answer, []byte("\n"))
			f := strings.Fields(string(line))
			if !found || len(f) != 2 || f[0] != "OK" {
				t.Fatalf("handshake accepted %q", answer)
			}
			if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
				t.Fatalf("handshake accepted port %q", f[1])
			}
		}
	})
}

func TestHandshake(t *testing.T) {
	for answer, ok := range map[string]bool{"OK 1073741824\n": true, "OK\n": false, "": false, "NOPE 1\n": false} {
		host, fc := net.Pipe()
		go func() {
			defer fc.Close()
			buf := make([]byte, 64)
			n, _ := fc.Read(buf)
			if string(buf[:n]) != "CONNECT 49983\n" {
				return
			}
			_, _ = fc.Write([]byte(answer))
		}()
		err := handshake(context.Background(), host, 49983)
		_ = host.Close()
		if (err == nil) != ok {
			t.Errorf("handshake(%q) = %v", answer, err)
		}
	}
}
