package shim_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// CRI's streaming calls as kubectl uses them, through the streaming server
// containerd's CRI plugin runs (the URL PortForward, Exec and Attach
// return), spoken with its WebSocket protocols (the "v4.channel.k8s.io"
// framing: one byte of channel, then the data):
//
//   - PortForward: a server in a container of a pod on a CNI network,
//     listening on the guest's 127.0.0.1 only, answers through the URL,
//     both ways; so does a plain connection to 127.0.0.1:PORT in the pod's
//     network namespace (what containerd dials). A port nothing serves in
//     the guest is refused.
//   - Exec with a TTY and stdin: what is typed reaches the process in the
//     container, the terminal echoes it, a resize reaches the terminal, and
//     the exit status comes on the error channel.
//   - Attach to a container started with a TTY and stdin.
//
// A forward still open when the pod is removed is ended; removing the pod
// leaves nothing (the forwarder's listener and its loopback redirect go
// with the pod).
func TestCRIStreaming(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := c.podConfig("streampod", false)
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	podID := run.PodSandboxId
	vmms := c.sandboxPIDs()
	if len(vmms) != 1 {
		t.Fatalf("VMMs of the pod: %d, want 1\n%s", len(vmms), c.shimLogs())
	}
	podNS := netnsOf(vmms[0])
	// containerd runs in a namespace of its own, whose loopback (where its
	// streaming server listens) starts down.
	ctrdNS := netnsOf(c.cmd.Process.Pid)
	h := netlinkIn(t, ctrdNS)
	if lo, err := h.LinkByName("lo"); err != nil || h.LinkSetUp(lo) != nil {
		t.Fatalf("loopback up in containerd's namespace: %v", err)
	}
	c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "echo"},
		Command:  []string{"/bin/app", "echo-serve", "127.0.0.1:8080"},
	})

	t.Run("PortForward", func(t *testing.T) {
		// What containerd dials: localhost:8080 in the pod's namespace.
		var conn net.Conn
		deadline := time.Now().Add(10 * time.Second)
		for {
			conn, err = dialIn(podNS, "127.0.0.1:8080")
			if err == nil {
				_, err = conn.Write([]byte("ping\n"))
			}
			if err == nil {
				var got string
				if got, err = readN(conn, 5); err == nil && got != "ping\n" {
					err = fmt.Errorf("read %q", got)
				}
				conn.Close()
			}
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond) // the server may not listen yet
		}
		if err != nil {
			t.Fatalf("127.0.0.1:8080 in the pod's namespace does not reach the guest's server: %v\n%s", err, c.shimLogs())
		}
		// A port the guest does not serve.
		if conn, err := dialIn(podNS, "127.0.0.1:8081"); err == nil {
			got, rerr := readN(conn, 1)
			conn.Close()
			if rerr == nil {
				t.Errorf("127.0.0.1:8081 (nothing listens in the guest) answered %q", got)
			}
		}

		// Through CRI's streaming server, as kubectl port-forward.
		pf, err := c.rs.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{8080}})
		if err != nil {
			t.Fatalf("PortForward: %v", err)
		}
		ws := dialStream(t, ctrdNS, pf.Url, "v4.channel.k8s.io")
		defer ws.Close()
		// The server first names the port on the data and error channels.
		for _, ch := range []byte{0, 1} {
			m := recvFrame(t, ws)
			if len(m) != 3 || m[0] != ch || binary.LittleEndian.Uint16(m[1:]) != 8080 {
				t.Fatalf("port forward's opening frame %v, want channel %d and port 8080", m, ch)
			}
		}
		sendFrame(t, ws, 0, []byte("hello through CRI\n"))
		var got []byte
		for len(got) < len("hello through CRI\n") {
			m := recvFrame(t, ws)
			if m[0] != 0 {
				t.Fatalf("port forward: frame on channel %d: %q\n%s", m[0], m[1:], c.shimLogs())
			}
			got = append(got, m[1:]...)
		}
		if string(got) != "hello through CRI\n" {
			t.Errorf("port forward echoed %q", got)
		}
	})

	t.Run("Exec", func(t *testing.T) {
		echo := c.listContainer(ctx, podID, "echo")
		ex, err := c.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: echo, Cmd: []string{"/bin/app", "cat"},
			Tty: true, Stdin: true, Stdout: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		ws := dialStream(t, ctrdNS, ex.Url, "v4.channel.k8s.io")
		defer ws.Close()
		sendFrame(t, ws, 4, []byte(`{"Width":100,"Height":40}`))
		sendFrame(t, ws, 0, []byte("typed line\n"))
		out, _ := readUntil(t, ws, "typed line\r\ntyped line\r\n")
		if !strings.Contains(out, "typed line\r\ntyped line\r\n") {
			t.Fatalf("exec's terminal: %q, want the echo of the input and cat's copy\n%s", out, c.shimLogs())
		}
		sendFrame(t, ws, 0, []byte{4}) // Ctrl-D: cat sees the end of its input
		_, status := readUntil(t, ws, "")
		if !strings.Contains(status, `"status":"Success"`) {
			t.Errorf("exec's status %q, want Success", status)
		}
		// The resize reached the terminal; an exit code comes back.
		ex, err = c.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: echo, Cmd: []string{"/bin/app", "winsize"},
			Tty: true, Stdin: true, Stdout: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		ws2 := dialStream(t, ctrdNS, ex.Url, "v4.channel.k8s.io")
		defer ws2.Close()
		sendFrame(t, ws2, 4, []byte(`{"Width":100,"Height":40}`))
		out, status = readUntil(t, ws2, "")
		if !strings.Contains(out, "winsize 40 100") || !strings.Contains(status, "Success") {
			t.Errorf("winsize in an exec resized to 100x40: %q, status %q", out, status)
		}
		ex, err = c.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: echo, Cmd: []string{"/bin/app", "exit", "3"},
			Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		ws3 := dialStream(t, ctrdNS, ex.Url, "v4.channel.k8s.io")
		defer ws3.Close()
		if _, status = readUntil(t, ws3, ""); !strings.Contains(status, `"ExitCode","message":"3"`) {
			t.Errorf("exec of exit 3: status %q, want the exit code 3", status)
		}
	})

	t.Run("Attach", func(t *testing.T) {
		id := c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "tty"},
			Command:  []string{"/bin/app", "cat"},
			Stdin:    true, Tty: true,
		})
		at, err := c.rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Tty: true})
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		ws := dialStream(t, ctrdNS, at.Url, "v4.channel.k8s.io")
		defer ws.Close()
		sendFrame(t, ws, 0, []byte("attached\n"))
		if out, _ := readUntil(t, ws, "attached\r\nattached\r\n"); !strings.Contains(out, "attached\r\nattached\r\n") {
			t.Errorf("attach: %q, want the terminal's echo and cat's copy\n%s", out, c.shimLogs())
		}
	})

	// A forward left open while the pod goes is ended with it.
	open, err := dialIn(podNS, "127.0.0.1:8080")
	if err != nil {
		t.Fatalf("forward to 127.0.0.1:8080: %v", err)
	}
	defer open.Close()
	if _, err := open.Write([]byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := readN(open, len("still here\n")); err != nil || got != "still here\n" {
		t.Fatalf("open forward: %q, %v", got, err)
	}
	c.removePod(ctx, podID)
	if got, err := readN(open, 1); err == nil {
		t.Errorf("a forward open across RemovePodSandbox still reads %q", got)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("a forward open across RemovePodSandbox was not ended (read timed out)")
	}
	c.conn.Close()
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", podID)
}

// listContainer is the ID of the pod's container named name.
func (c *criEnv) listContainer(ctx context.Context, podID, name string) string {
	c.t.Helper()
	l, err := c.rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, ct := range l.Containers {
		if ct.Metadata.Name == name {
			return ct.Id
		}
	}
	c.t.Fatalf("no container %s in pod %s", name, podID)
	return ""
}

// dialIn connects to addr from network namespace ns.
func dialIn(ns, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netdev.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	return conn, err
}

// readN reads n bytes from conn within 3 s.
func readN(conn net.Conn, n int) (string, error) {
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, n)
	k := 0
	for k < n {
		m, err := conn.Read(b[k:])
		k += m
		if err != nil {
			return string(b[:k]), err
		}
	}
	return string(b), nil
}

// dialStream opens a WebSocket to a CRI streaming URL from network
// namespace ns (containerd's: its streaming server listens on its
// loopback) with the subprotocol proto.
func dialStream(t *testing.T, ns, rawURL, proto string) *websocket.Conn {
	t.Helper()
	u := strings.Replace(rawURL, "http://", "ws://", 1)
	cfg, err := websocket.NewConfig(u, "http://localhost/")
	if err != nil {
		t.Fatalf("streaming URL %q: %v", rawURL, err)
	}
	cfg.Protocol = []string{proto}
	var ws *websocket.Conn
	if err := netdev.Do(ns, func() error {
		var err error
		ws, err = websocket.DialConfig(cfg)
		return err
	}); err != nil {
		t.Fatalf("open %s: %v", rawURL, err)
	}
	return ws
}

func sendFrame(t *testing.T, ws *websocket.Conn, ch byte, data []byte) {
	t.Helper()
	if err := websocket.Message.Send(ws, append([]byte{ch}, data...)); err != nil {
		t.Fatalf("send on channel %d: %v", ch, err)
	}
}

// recvFrame reads one frame (its channel byte first) within 10 s.
func recvFrame(t *testing.T, ws *websocket.Conn) []byte {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m []byte
	if err := websocket.Message.Receive(ws, &m); err != nil {
		t.Fatalf("receive: %v", err)
	}
	if len(m) == 0 {
		t.Fatal("receive: an empty frame (no channel byte)")
	}
	return m
}

// readUntil collects an exec's or attach's output (channels 1 and 2) until
// it contains want (want "" : until the stream ends), and what came on the
// error channel (3).
func readUntil(t *testing.T, ws *websocket.Conn, want string) (out, status string) {
	t.Helper()
	var o, st bytes.Buffer
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if want != "" && strings.Contains(o.String(), want) {
			break
		}
		_ = ws.SetReadDeadline(deadline)
		var m []byte
		if err := websocket.Message.Receive(ws, &m); err != nil {
			break
		}
		if len(m) == 0 {
			continue
		}
		switch m[0] {
		case 1, 2:
			o.Write(m[1:])
		case 3:
			st.Write(m[1:])
		}
	}
	if st.Len() > 0 {
		var s map[string]any
		if json.Unmarshal(st.Bytes(), &s) != nil {
			t.Errorf("error channel: %q is not a JSON status", st.Bytes())
		}
	}
	return o.String(), st.String()
}
