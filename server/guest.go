package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"syscall"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/agent"
	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/api/kindling/v1/kindlingv1connect"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
)

// guest serves the runtime's guest calls (sandbox.Guest): processes and
// files in a sandbox's guest, through its agent.
type guest struct{ s *Server }

var _ kindlingv1connect.GuestServiceHandler = guest{}

// execs are the processes Exec calls have running, by handle, so that
// WriteStdin, Signal and Resize reach them.
type execs struct {
	mu sync.Mutex // guards m
	m  map[string]*execEntry
}

type execEntry struct {
	p     sandbox.Process
	stdin sync.Mutex // orders writes to the process's input
}

func (e *execs) add(p sandbox.Process) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	ent := &execEntry{p: p}
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]*execEntry{}
	}
	e.m[h] = ent
	e.mu.Unlock()
	return h
}

func (e *execs) drop(h string) {
	e.mu.Lock()
	delete(e.m, h)
	e.mu.Unlock()
}

func (e *execs) get(h string) (*execEntry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ent := e.m[h]; ent != nil {
		return ent, nil
	}
	return nil, fmt.Errorf("process handle %q: no such process (it has ended, or its Exec call did): %w", h, sandbox.ErrNotFound)
}

// streamSender sends a stream's messages from several goroutines.
type streamSender struct {
	mu     sync.Mutex // serializes Send
	stream *connect.ServerStream[pb.ExecEvent]
	// started is closed once the start event is sent (or failed to be):
	// output waits for it, as the client takes the first event for the
	// start. A process quick to write could otherwise have its output
	// sent while the handler is still on its way to sending the start.
	started   chan struct{}
	startOnce sync.Once
}

// markStarted lets the output through.
func (s *streamSender) markStarted() { s.startOnce.Do(func() { close(s.started) }) }

func (s *streamSender) send(ev *pb.ExecEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(ev)
}

// outWriter sends what a process writes as stdout or stderr events.
type outWriter struct {
	s      *streamSender
	stderr bool
}

func (w outWriter) Write(b []byte) (int, error) {
	// The chunk is copied: the caller reuses b.
	data := append([]byte(nil), b...)
	ev := &pb.ExecEvent{Event: &pb.ExecEvent_Stdout{Stdout: data}}
	if w.stderr {
		ev = &pb.ExecEvent{Event: &pb.ExecEvent_Stderr{Stderr: data}}
	}
	<-w.s.started
	if err := w.s.send(ev); err != nil {
		return 0, err
	}
	return len(b), nil
}

// maxArgs bounds an exec's arguments and environment entries.
const maxArgs = 4096

func (g guest) Exec(ctx context.Context, req *connect.Request[pb.ExecRequest], stream *connect.ServerStream[pb.ExecEvent]) error {
	m := req.Msg
	if err := needID(m.GetId()); err != nil {
		return apiconv.ToConnect(err)
	}
	switch {
	case len(m.GetArgs()) == 0 || m.GetArgs()[0] == "":
		return apiconv.ToConnect(fmt.Errorf("exec: no command given: %w", sandbox.ErrInvalid))
	case len(m.GetArgs()) > maxArgs || len(m.GetEnv()) > maxArgs:
		return apiconv.ToConnect(fmt.Errorf("exec: more than %d arguments or environment entries: %w", maxArgs, sandbox.ErrInvalid))
	case m.GetRows() > 0xffff || m.GetCols() > 0xffff:
		return apiconv.ToConnect(fmt.Errorf("exec: terminal size %dx%d: give at most 65535: %w", m.GetRows(), m.GetCols(), sandbox.ErrInvalid))
	}
	out := &streamSender{stream: stream, started: make(chan struct{})}
	// The process lives as long as this call: the call's end (the client
	// went away) cancels ctx, which kills it.
	p, err := g.s.rt.Exec(ctx, m.GetId(), sandbox.ExecRequest{
		Args: m.GetArgs(), Env: m.GetEnv(), Dir: m.GetDir(), User: m.GetUser(),
		TTY: m.GetTty(), Rows: uint16(m.GetRows()), Cols: uint16(m.GetCols()), Stdin: m.GetStdin(),
		Stdout: outWriter{s: out}, Stderr: outWriter{s: out, stderr: true},
	})
	var ee *agent.ExecError
	if errors.As(err, &ee) {
		return out.send(&pb.ExecEvent{Event: &pb.ExecEvent_Failure{Failure: &pb.ExecFailure{
			Cmd: ee.Cmd, NotFound: ee.NotFound, Message: err.Error()}}})
	}
	if err != nil {
		return apiconv.ToConnect(err)
	}
	defer p.Close()
	h := g.s.execs.add(p)
	defer g.s.execs.drop(h)
	err = out.send(&pb.ExecEvent{Event: &pb.ExecEvent_Started{Started: &pb.ExecStarted{Pid: p.PID(), Handle: h}}})
	out.markStarted() // before any return: p.Close waits for the output's writer
	if err != nil {
		return err
	}
	code, err := p.Wait(ctx)
	if err != nil {
		return apiconv.ToConnect(err)
	}
	return out.send(&pb.ExecEvent{Event: &pb.ExecEvent_Exit{Exit: int32(code)}})
}

func (g guest) WriteStdin(ctx context.Context, req *connect.Request[pb.WriteStdinRequest]) (*connect.Response[pb.Empty], error) {
	ent, err := g.s.execs.get(req.Msg.GetHandle())
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	in := ent.p.Stdin()
	if in == nil {
		return reply[pb.Empty](nil, fmt.Errorf("write stdin: the process was started without stdin: %w", sandbox.ErrInvalid))
	}
	ent.stdin.Lock()
	defer ent.stdin.Unlock()
	if len(req.Msg.GetData()) > 0 {
		if _, err := in.Write(req.Msg.GetData()); err != nil {
			return reply[pb.Empty](nil, fmt.Errorf("write stdin: %w", err))
		}
	}
	if req.Msg.GetEof() {
		if err := in.Close(); err != nil {
			return reply[pb.Empty](nil, fmt.Errorf("close stdin: %w", err))
		}
	}
	return reply(&pb.Empty{}, nil)
}

func (g guest) Signal(ctx context.Context, req *connect.Request[pb.SignalRequest]) (*connect.Response[pb.Empty], error) {
	ent, err := g.s.execs.get(req.Msg.GetHandle())
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	sig := req.Msg.GetSignal()
	if sig <= 0 || sig > 64 {
		return reply[pb.Empty](nil, fmt.Errorf("signal %d: give a signal number from 1 to 64: %w", sig, sandbox.ErrInvalid))
	}
	return reply(&pb.Empty{}, ent.p.Signal(ctx, syscall.Signal(sig)))
}

func (g guest) Resize(ctx context.Context, req *connect.Request[pb.ResizeRequest]) (*connect.Response[pb.Empty], error) {
	ent, err := g.s.execs.get(req.Msg.GetHandle())
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	rows, cols := req.Msg.GetRows(), req.Msg.GetCols()
	if rows == 0 || cols == 0 || rows > 0xffff || cols > 0xffff {
		return reply[pb.Empty](nil, fmt.Errorf("terminal size %dx%d: give 1 to 65535 rows and columns: %w", rows, cols, sandbox.ErrInvalid))
	}
	return reply(&pb.Empty{}, ent.p.Resize(ctx, uint16(rows), uint16(cols)))
}

// fileRequest checks a file request's sandbox and path.
func fileRequest(f *pb.FileRequest) (string, string, sandbox.FileOptions, error) {
	if err := needID(f.GetId()); err != nil {
		return "", "", sandbox.FileOptions{}, err
	}
	if f.GetPath() == "" {
		return "", "", sandbox.FileOptions{}, fmt.Errorf("no path given: %w", sandbox.ErrInvalid)
	}
	return f.GetId(), f.GetPath(), sandbox.FileOptions{User: f.GetUser()}, nil
}

// putReader reads the data of a PutFile call's messages.
type putReader struct {
	stream *connect.ClientStream[pb.PutFileRequest]
	buf    []byte
	done   bool
}

func (r *putReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if !r.stream.Receive() {
			r.done = true
			if err := r.stream.Err(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		r.buf = r.stream.Msg().GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (g guest) PutFile(ctx context.Context, stream *connect.ClientStream[pb.PutFileRequest]) (*connect.Response[pb.Empty], error) {
	if !stream.Receive() {
		err := stream.Err()
		if err == nil {
			err = fmt.Errorf("put file: no message: %w", sandbox.ErrInvalid)
		}
		return reply[pb.Empty](nil, err)
	}
	id, path, o, err := fileRequest(stream.Msg().GetFile())
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	r := &putReader{stream: stream, buf: stream.Msg().GetData()}
	return reply(&pb.Empty{}, g.s.rt.PutFile(ctx, id, path, r, o))
}

// fileChunk is the most a FileChunk carries.
const fileChunk = 32 << 10

func (g guest) GetFile(ctx context.Context, req *connect.Request[pb.FileRequest], stream *connect.ServerStream[pb.FileChunk]) error {
	id, path, o, err := fileRequest(req.Msg)
	if err != nil {
		return apiconv.ToConnect(err)
	}
	rc, err := g.s.rt.GetFile(ctx, id, path, o)
	if err != nil {
		return apiconv.ToConnect(err)
	}
	defer rc.Close()
	// The first message goes out even for an empty file, so that the
	// client knows the file exists before it reads.
	buf := make([]byte, fileChunk)
	first := true
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 || first {
			if serr := stream.Send(&pb.FileChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
			first = false
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return apiconv.ToConnect(err)
		}
	}
}

func (g guest) StatFile(ctx context.Context, req *connect.Request[pb.FileRequest]) (*connect.Response[pb.FileInfoResponse], error) {
	id, path, o, err := fileRequest(req.Msg)
	if err != nil {
		return reply[pb.FileInfoResponse](nil, err)
	}
	fi, err := g.s.rt.StatFile(ctx, id, path, o)
	if err != nil {
		return reply[pb.FileInfoResponse](nil, err)
	}
	return reply(&pb.FileInfoResponse{File: apiconv.FileInfoToPB(fi)}, nil)
}

// maxDepth bounds ListDir's depth.
const maxDepth = 64

func (g guest) ListDir(ctx context.Context, req *connect.Request[pb.ListDirRequest]) (*connect.Response[pb.ListDirResponse], error) {
	id, dir, o, err := fileRequest(req.Msg.GetDir())
	if err != nil {
		return reply[pb.ListDirResponse](nil, err)
	}
	depth := int(req.Msg.GetDepth())
	if depth < 0 || depth > maxDepth {
		return reply[pb.ListDirResponse](nil, fmt.Errorf("depth %d: give 0 to %d: %w", depth, maxDepth, sandbox.ErrInvalid))
	}
	if depth == 0 {
		depth = 1
	}
	fis, err := g.s.rt.ListDir(ctx, id, dir, depth, o)
	if err != nil {
		return reply[pb.ListDirResponse](nil, err)
	}
	out := &pb.ListDirResponse{Files: make([]*pb.FileInfo, 0, len(fis))}
	for _, fi := range fis {
		out.Files = append(out.Files, apiconv.FileInfoToPB(fi))
	}
	return reply(out, nil)
}

func (g guest) MakeDir(ctx context.Context, req *connect.Request[pb.FileRequest]) (*connect.Response[pb.Empty], error) {
	id, dir, o, err := fileRequest(req.Msg)
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, g.s.rt.MakeDir(ctx, id, dir, o))
}

func (g guest) Chmod(ctx context.Context, req *connect.Request[pb.ChmodRequest]) (*connect.Response[pb.Empty], error) {
	id, path, o, err := fileRequest(req.Msg.GetFile())
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	mode := req.Msg.GetMode()
	if mode&^0o7777 != 0 {
		return reply[pb.Empty](nil, fmt.Errorf("mode %#o: give permission bits (at most 07777): %w", mode, sandbox.ErrInvalid))
	}
	return reply(&pb.Empty{}, g.s.rt.Chmod(ctx, id, path, fs.FileMode(mode), o))
}

func (g guest) RemoveFile(ctx context.Context, req *connect.Request[pb.FileRequest]) (*connect.Response[pb.Empty], error) {
	id, path, o, err := fileRequest(req.Msg)
	if err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, g.s.rt.RemoveFile(ctx, id, path, o))
}

func (g guest) WatchDir(ctx context.Context, req *connect.Request[pb.WatchDirRequest], stream *connect.ServerStream[pb.WatchDirEvent]) error {
	id, dir, o, err := fileRequest(req.Msg.GetDir())
	if err != nil {
		return apiconv.ToConnect(err)
	}
	w, err := g.s.rt.WatchDir(ctx, id, dir, req.Msg.GetRecursive(), o)
	if err != nil {
		return apiconv.ToConnect(err)
	}
	defer w.Close()
	if err := stream.Send(&pb.WatchDirEvent{}); err != nil {
		return err
	}
	for ev := range w.Events() {
		if err := stream.Send(&pb.WatchDirEvent{Name: ev.Name, Type: ev.Type.String()}); err != nil {
			return err
		}
	}
	if err := w.Err(); err != nil && ctx.Err() == nil {
		return apiconv.ToConnect(err)
	}
	return nil
}
