package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// The agent scenarios run on the simulated guest: the fake Firecracker
// boots a root filesystem holding the real agent, in namespaces (root
// only). They measure kindling's own overhead on the way to the agent —
// the runtime's Exec and file calls against a raw client speaking the same
// wire format over the same vsock socket, in the same run — never a guest
// kernel's, so their rows say "simulated".

// agentReady says why the agent scenarios cannot run here, or nil: the
// simulated guest needs root, loop devices and a static busybox for its
// image.
func agentReady() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the simulated guest needs root (running as uid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("the simulated guest needs loop devices: %w", err)
	}
	if _, err := exec.LookPath("busybox"); err != nil {
		if _, err := os.Stat("/bin/busybox"); err != nil {
			return errors.New("the simulated guest's image needs a static busybox (install busybox-static)")
		}
	}
	return nil
}

// agentPort is the guest agent's vsock port (envd's).
const agentPort = 49983

// agentBox is the sandbox the agent scenarios share, made on first use.
type agentBox struct {
	once  sync.Once
	info  sandbox.Info
	token string
	err   error
}

// agentSandbox returns the running simulated-guest sandbox with the agent,
// creating it on first use; env.close removes it with the rest.
func (e *env) agentSandbox(ctx context.Context) (sandbox.Info, string, error) {
	b := &e.agent
	b.once.Do(func() { b.info, b.token, b.err = e.startAgentSandbox(ctx) })
	return b.info, b.token, b.err
}

func (e *env) startAgentSandbox(ctx context.Context) (sandbox.Info, string, error) {
	if err := agentReady(); err != nil {
		return sandbox.Info{}, "", fmt.Errorf("the agent scenarios run on a simulated guest: %w", err)
	}
	modRoot, err := moduleRoot(ctx)
	if err != nil {
		return sandbox.Info{}, "", fmt.Errorf("agent scenarios: %w", err)
	}
	goBin, err := gotool.Path()
	if err != nil {
		return sandbox.Info{}, "", err
	}
	build := func(pkg, out string) error {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
		cmd.Dir = modRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", pkg, err, strings.TrimSpace(string(b)))
		}
		return nil
	}
	fake := filepath.Join(e.tmp, "fake-firecracker")
	agentBin := filepath.Join(e.tmp, "kindling-agent")
	if err := build("./internal/cmd/fake-firecracker", fake); err != nil {
		return sandbox.Info{}, "", err
	}
	if err := build("./cmd/kindling-agent", agentBin); err != nil {
		return sandbox.Info{}, "", err
	}
	img := filepath.Join(e.tmp, "agent-root.ext4")
	if err := testutil.WriteAgentRootfs(img, testutil.AgentRootOptions{Init: agentBin, SizeMiB: 64}); err != nil {
		return sandbox.Info{}, "", err
	}
	id := e.newID("agent")
	e.track.addSandbox(id)
	spec := sandbox.Spec{ID: id, Kernel: e.halt, Firecracker: fake, Agent: true, Rootfs: &sandbox.Disk{Path: img}}
	if _, err := e.rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		return sandbox.Info{}, "", err
	}
	in, err := e.rt.Start(ctx, id)
	if err != nil {
		return sandbox.Info{}, "", err
	}
	tok, err := os.ReadFile(filepath.Join(in.Dir, "agent.token"))
	if err != nil {
		return sandbox.Info{}, "", fmt.Errorf("read the sandbox's agent token: %w", err)
	}
	return in, strings.TrimSpace(string(tok)), nil
}

// agentRaw is the raw baseline: one connection per operation (as the
// runtime's calls make), Firecracker's hybrid-vsock handshake by hand,
// HTTP/1.1, Connect's streaming envelopes with protobuf encoded and read
// field by field.
type agentRaw struct {
	hc    *http.Client
	token string
}

func newAgentRaw(uds, token string) *agentRaw {
	tr := &http.Transport{
		DisableKeepAlives:  true,
		DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", uds)
			if err != nil {
				return nil, err
			}
			if _, err := fmt.Fprintf(c, "CONNECT %d\n", agentPort); err != nil {
				c.Close()
				return nil, err
			}
			var b [1]byte
			var line []byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					c.Close()
					return nil, fmt.Errorf("vsock handshake: %w", err)
				}
				if b[0] == '\n' {
					break
				}
				line = append(line, b[0])
			}
			if !bytes.HasPrefix(line, []byte("OK ")) {
				c.Close()
				return nil, fmt.Errorf("vsock handshake: %q", line)
			}
			return c, nil
		},
	}
	return &agentRaw{hc: &http.Client{Transport: tr}, token: token}
}

// exec runs cmd and returns its exit code.
func (r *agentRaw) exec(ctx context.Context, cmd string) (int, error) {
	// StartRequest{process: ProcessConfig{cmd}, stdin: false}
	var pc []byte
	pc = protowire.AppendTag(pc, 1, protowire.BytesType)
	pc = protowire.AppendString(pc, cmd)
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendBytes(msg, pc)
	msg = protowire.AppendTag(msg, 4, protowire.VarintType)
	msg = protowire.AppendVarint(msg, 0)
	body := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	copy(body[5:], msg)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/process.Process/Start", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/connect+proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("X-Access-Token", r.token)
	res, err := r.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("start: %s", res.Status)
	}
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
		// StartResponse.event(1) → ProcessEvent.end(3) → EndEvent.exit_code(1), sint32.
		ev := field(buf, 1)
		if end := field(ev, 3); end != nil {
			code := 0
			if v := varintField(end, 1); v != 0 {
				code = int(protowire.DecodeZigZag(v))
			}
			_, _ = io.Copy(io.Discard, br)
			return code, nil
		}
	}
}

// field returns the bytes of the length-delimited field num of a
// protobuf message (nil when absent).
func field(b []byte, num protowire.Number) []byte {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil
		}
		b = b[l:]
		if n == num && t == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil
			}
			if v == nil {
				v = []byte{}
			}
			return v
		}
		l = protowire.ConsumeFieldValue(n, t, b)
		if l < 0 {
			return nil
		}
		b = b[l:]
	}
	return nil
}

// varintField returns the varint field num of a message (0 when absent).
func varintField(b []byte, num protowire.Number) uint64 {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0
		}
		b = b[l:]
		if n == num && t == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			return v
		}
		l = protowire.ConsumeFieldValue(n, t, b)
		if l < 0 {
			return 0
		}
		b = b[l:]
	}
	return 0
}

// put writes data to path in the guest.
func (r *agentRaw) put(ctx context.Context, path string, data []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/files?path="+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Access-Token", r.token)
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

// get reads path in the guest and returns its size.
func (r *agentRaw) get(ctx context.Context, path string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/files?path="+path, nil)
	req.Header.Set("X-Access-Token", r.token)
	res, err := r.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("get: %s", res.Status)
	}
	return io.Copy(io.Discard, res.Body)
}

// agentFileSize is what the file scenario sends up and reads back.
const agentFileSize = 1 << 20

// agentScenarios are the exec and file scenarios on the simulated guest.
func agentScenarios() []scenario {
	data := bytes.Repeat([]byte("kindling"), agentFileSize/8)
	raw := func(fn func(ctx context.Context, r *agentRaw) (sample, error)) setupFunc {
		return func(ctx context.Context, e *env) (iterFunc, func(), error) {
			in, tok, err := e.agentSandbox(ctx)
			if err != nil {
				return nil, nil, err
			}
			r := newAgentRaw(in.VsockSocket, tok)
			return func(ctx context.Context) (sample, error) { return fn(ctx, r) }, r.hc.CloseIdleConnections, nil
		}
	}
	rt := func(fn func(ctx context.Context, e *env, id string) (sample, error)) setupFunc {
		return func(ctx context.Context, e *env) (iterFunc, func(), error) {
			in, _, err := e.agentSandbox(ctx)
			if err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) (sample, error) { return fn(ctx, e, in.ID) }, func() {}, nil
		}
	}
	return []scenario{
		{key: "agent_exec", paths: map[string]setupFunc{
			pathRaw: raw(func(ctx context.Context, r *agentRaw) (sample, error) {
				t0 := time.Now()
				code, err := r.exec(ctx, "true")
				d := time.Since(t0)
				if err == nil && code != 0 {
					err = fmt.Errorf("true exited with %d", code)
				}
				return sample{"agent_exec": seconds(d)}, err
			}),
			pathRuntime: rt(func(ctx context.Context, e *env, id string) (sample, error) {
				t0 := time.Now()
				p, err := e.rt.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"true"}, Stdout: io.Discard, Stderr: io.Discard})
				if err != nil {
					return nil, err
				}
				code, err := p.Wait(ctx)
				d := time.Since(t0)
				p.Close()
				if err == nil && code != 0 {
					err = fmt.Errorf("true exited with %d", code)
				}
				return sample{"agent_exec": seconds(d)}, err
			}),
		}},
		{key: "agent_files", paths: map[string]setupFunc{
			pathRaw: raw(func(ctx context.Context, r *agentRaw) (sample, error) {
				t0 := time.Now()
				if err := r.put(ctx, "/tmp/bench-raw", data); err != nil {
					return nil, err
				}
				n, err := r.get(ctx, "/tmp/bench-raw")
				d := time.Since(t0)
				if err == nil && n != int64(len(data)) {
					err = fmt.Errorf("got %d bytes back, sent %d", n, len(data))
				}
				return sample{"agent_files": seconds(d)}, err
			}),
			pathRuntime: rt(func(ctx context.Context, e *env, id string) (sample, error) {
				t0 := time.Now()
				if err := e.rt.PutFile(ctx, id, "/tmp/bench-rt", bytes.NewReader(data), sandbox.FileOptions{}); err != nil {
					return nil, err
				}
				rc, err := e.rt.GetFile(ctx, id, "/tmp/bench-rt", sandbox.FileOptions{})
				if err != nil {
					return nil, err
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				d := time.Since(t0)
				if err == nil && n != int64(len(data)) {
					err = errors.New("short read")
				}
				return sample{"agent_files": seconds(d)}, err
			}),
		}},
	}
}
