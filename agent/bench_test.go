package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/internal/agenttest"
	pb "github.com/kindling-vm/kindling/agent/internal/spec/process"
)

// rawClient speaks the agent's wire format by hand over the same socket:
// Connect's streaming protocol with binary protobuf envelopes, and plain
// HTTP for files. It is the baseline the client is measured against.
type rawClient struct{ hc *http.Client }

func newRawClient(sock string) *rawClient {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}, MaxIdleConnsPerHost: 8, DisableCompression: true}
	return &rawClient{hc: &http.Client{Transport: tr}}
}

// exec runs cmd and returns its exit code.
func (r *rawClient) exec(cmd string) (int, error) {
	msg, err := proto.Marshal(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: cmd}})
	if err != nil {
		return 0, err
	}
	body := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	copy(body[5:], msg)
	req, _ := http.NewRequest(http.MethodPost, "http://agent/process.Process/Start", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/connect+proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	res, err := r.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return 0, fmt.Errorf("stream ended before the end event: %w", err)
		}
		buf := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(br, buf); err != nil {
			return 0, err
		}
		if hdr[0]&2 != 0 {
			return 0, fmt.Errorf("end of stream without the end event: %s", buf)
		}
		var sr pb.StartResponse
		if err := proto.Unmarshal(buf, &sr); err != nil {
			return 0, err
		}
		if end := sr.GetEvent().GetEnd(); end != nil {
			_, _ = io.Copy(io.Discard, br)
			return int(end.GetExitCode()), nil
		}
	}
}

func (r *rawClient) put(path string, data []byte) error {
	req, _ := http.NewRequest(http.MethodPost, "http://agent/files?path="+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("put: %s", res.Status)
	}
	return nil
}

func (r *rawClient) get(path string) (int64, error) {
	res, err := r.hc.Get("http://agent/files?path=" + path)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("get: %s", res.Status)
	}
	return io.Copy(io.Discard, res.Body)
}

// BenchmarkExecTrue is the round trip of running `true` (start, stream,
// end) through the client and through the raw baseline, against an agent
// in host mode on a Unix socket.
func BenchmarkExecTrue(b *testing.B) {
	a := agenttest.Start(b, agenttest.Options{})
	b.Run("client", func(b *testing.B) {
		c, err := agent.New(agent.Config{SocketPath: a.Socket})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		for b.Loop() {
			p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"true"}, Stdout: io.Discard, Stderr: io.Discard})
			if err != nil {
				b.Fatal(err)
			}
			if code, err := p.Wait(ctx); err != nil || code != 0 {
				b.Fatalf("true: %d, %v", code, err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		r := newRawClient(a.Socket)
		defer r.hc.CloseIdleConnections()
		for b.Loop() {
			if code, err := r.exec("true"); err != nil || code != 0 {
				b.Fatalf("true: %d, %v", code, err)
			}
		}
	})
}

// BenchmarkFile1MiB puts and gets back 1 MiB through the client and the
// raw baseline (host mode, Unix socket).
func BenchmarkFile1MiB(b *testing.B) {
	a := agenttest.Start(b, agenttest.Options{})
	data := bytes.Repeat([]byte("kindling"), 1<<17)
	path := b.TempDir() + "/f"
	b.Run("client", func(b *testing.B) {
		c, err := agent.New(agent.Config{SocketPath: a.Socket})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		b.SetBytes(2 << 20)
		for b.Loop() {
			if err := c.PutFile(ctx, path, bytes.NewReader(data), agent.FileOptions{}); err != nil {
				b.Fatal(err)
			}
			rc, err := c.GetFile(ctx, path, agent.FileOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(data)) {
				b.Fatalf("get: %d, %v", n, err)
			}
			_ = rc.Close()
		}
	})
	b.Run("raw", func(b *testing.B) {
		r := newRawClient(a.Socket)
		defer r.hc.CloseIdleConnections()
		b.SetBytes(2 << 20)
		for b.Loop() {
			if err := r.put(path, data); err != nil {
				b.Fatal(err)
			}
			if n, err := r.get(path); err != nil || n != int64(len(data)) {
				b.Fatalf("get: %d, %v", n, err)
			}
		}
	})
}
