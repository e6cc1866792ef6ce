package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"syscall"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/agent"
	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
)

var _ sandbox.Guest = (*Client)(nil)

// chunkSize is the most data one message carries (stdin, files).
const chunkSize = 32 << 10

// Exec starts a process in sandbox id's guest, through the server.
// Cancelling ctx before it ends kills it. A program that is missing or
// cannot be executed gives an error wrapping *agent.ExecError.
func (c *Client) Exec(ctx context.Context, id string, req sandbox.ExecRequest) (sandbox.Process, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.guest.Exec(sctx, connect.NewRequest(&pb.ExecRequest{Id: id, Args: req.Args, Env: req.Env,
		Dir: req.Dir, User: req.User, Tty: req.TTY, Rows: uint32(req.Rows), Cols: uint32(req.Cols), Stdin: req.Stdin}))
	if err != nil {
		cancel()
		return nil, apiconv.FromConnect(err)
	}
	fail := func(err error) (sandbox.Process, error) {
		_ = stream.Close()
		cancel()
		return nil, err
	}
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return fail(apiconv.FromConnect(err))
		}
		return fail(fmt.Errorf("exec in sandbox %q: the server ended the call before the process started: %w", id, sandbox.ErrUnavailable))
	}
	switch ev := stream.Msg().GetEvent().(type) {
	case *pb.ExecEvent_Failure:
		f := ev.Failure
		return fail(fmt.Errorf("exec in sandbox %q: %w", id, &agent.ExecError{Cmd: f.GetCmd(), NotFound: f.GetNotFound(), Message: f.GetMessage()}))
	case *pb.ExecEvent_Started:
		p := &process{c: c, stream: stream, cancel: cancel, id: id, pid: ev.Started.GetPid(),
			handle: ev.Started.GetHandle(), done: make(chan struct{})}
		if req.Stdin || req.TTY {
			p.stdin = &stdinWriter{p: p}
		}
		p.stdout, p.stderr = req.Stdout, req.Stderr
		if p.stdout == nil {
			p.stdoutR, p.stdoutW = io.Pipe()
			p.stdout = p.stdoutW
		}
		if p.stderr == nil {
			p.stderrR, p.stderrW = io.Pipe()
			p.stderr = p.stderrW
		}
		go p.receive()
		return p, nil
	default:
		return fail(fmt.Errorf("exec in sandbox %q: the server's first message is not the start: %w", id, sandbox.ErrUnavailable))
	}
}

// process is a process the server runs for the client: the Exec stream
// brings its output and exit; its input, signals and size go as calls
// naming its handle.
type process struct {
	c      *Client
	stream *connect.ServerStreamForClient[pb.ExecEvent]
	cancel context.CancelFunc
	id     string
	pid    uint32
	handle string
	stdin  *stdinWriter

	stdout, stderr   io.Writer
	stdoutR, stderrR *io.PipeReader // nil when the request gave writers
	stdoutW, stderrW *io.PipeWriter

	done chan struct{} // closed when the stream has ended
	code int           // valid after done, when err is nil
	err  error
}

// receive copies the stream's output to its writers until the exit.
func (p *process) receive() {
	defer close(p.done)
	p.err = fmt.Errorf("exec in sandbox %q: the call ended without the process's exit status: %w", p.id, sandbox.ErrUnavailable)
	var werr error // a writer's failure: the output is dropped from then on
	for p.stream.Receive() {
		switch ev := p.stream.Msg().GetEvent().(type) {
		case *pb.ExecEvent_Stdout:
			if werr == nil {
				_, werr = p.stdout.Write(ev.Stdout)
			}
		case *pb.ExecEvent_Stderr:
			if werr == nil {
				_, werr = p.stderr.Write(ev.Stderr)
			}
		case *pb.ExecEvent_Exit:
			p.code, p.err = int(ev.Exit), nil
		}
	}
	if err := p.stream.Err(); err != nil && p.err != nil {
		p.err = fmt.Errorf("exec in sandbox %q: %w", p.id, apiconv.FromConnect(err))
	}
	for _, w := range []*io.PipeWriter{p.stdoutW, p.stderrW} {
		if w != nil {
			if p.err != nil {
				w.CloseWithError(p.err)
			} else {
				w.Close()
			}
		}
	}
}

func (p *process) PID() uint32 { return p.pid }

func (p *process) Stdin() io.WriteCloser {
	if p.stdin == nil {
		return nil
	}
	return p.stdin
}

func (p *process) Stdout() io.ReadCloser {
	if p.stdoutR == nil {
		return nil
	}
	return p.stdoutR
}

func (p *process) Stderr() io.ReadCloser {
	if p.stderrR == nil {
		return nil
	}
	return p.stderrR
}

// Wait waits for the exit status, all output having been written.
func (p *process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.code, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *process) Signal(ctx context.Context, sig syscall.Signal) error {
	_, err := call(ctx, p.c.guest.Signal, &pb.SignalRequest{Handle: p.handle, Signal: int32(sig)})
	return err
}

func (p *process) Resize(ctx context.Context, rows, cols uint16) error {
	_, err := call(ctx, p.c.guest.Resize, &pb.ResizeRequest{Handle: p.handle, Rows: uint32(rows), Cols: uint32(cols)})
	return err
}

// Close ends the call, which kills the process if it still runs.
func (p *process) Close() error {
	p.cancel()
	// Output nobody reads must not hold the receiver.
	for _, r := range []*io.PipeReader{p.stdoutR, p.stderrR} {
		if r != nil {
			_ = r.Close()
		}
	}
	<-p.done
	err := p.stream.Close()
	if errors.Is(err, context.Canceled) || connect.CodeOf(err) == connect.CodeCanceled {
		return nil
	}
	return apiconv.FromConnect(err)
}

// stdinWriter sends a process's input as WriteStdin calls, in order.
type stdinWriter struct {
	p      *process
	mu     sync.Mutex // orders the calls; guards closed
	closed bool
}

func (w *stdinWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, fmt.Errorf("write stdin: %w", fs.ErrClosed)
	}
	n := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), chunkSize)]
		if _, err := call(context.Background(), w.p.c.guest.WriteStdin, &pb.WriteStdinRequest{Handle: w.p.handle, Data: chunk}); err != nil {
			return n, err
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

func (w *stdinWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	_, err := call(context.Background(), w.p.c.guest.WriteStdin, &pb.WriteStdinRequest{Handle: w.p.handle, Eof: true})
	return err
}

// PutFile writes r to path in sandbox id's guest, creating parent
// directories.
func (c *Client) PutFile(ctx context.Context, id, path string, r io.Reader, o sandbox.FileOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := c.guest.PutFile(ctx)
	first := &pb.PutFileRequest{File: &pb.FileRequest{Id: id, Path: path, User: o.User}}
	buf := make([]byte, chunkSize)
	for {
		n, rerr := io.ReadFull(r, buf)
		msg := first
		if msg == nil {
			msg = &pb.PutFileRequest{}
		}
		first = nil
		msg.Data = buf[:n]
		if n > 0 || msg.File != nil {
			if err := stream.Send(msg); err != nil {
				// The server answered early (an error): CloseAndReceive says.
				break
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			cancel()
			_, _ = stream.CloseAndReceive()
			return fmt.Errorf("put file %q: read: %w", path, rerr)
		}
	}
	_, err := stream.CloseAndReceive()
	return apiconv.FromConnect(err)
}

// GetFile reads path in sandbox id's guest; the caller closes the reader.
func (c *Client) GetFile(ctx context.Context, id, path string, o sandbox.FileOptions) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.guest.GetFile(ctx, connect.NewRequest(&pb.FileRequest{Id: id, Path: path, User: o.User}))
	if err != nil {
		cancel()
		return nil, apiconv.FromConnect(err)
	}
	// The first chunk (sent even for an empty file) says the file exists.
	r := &chunkReader{recv: func() ([]byte, bool) {
		if !stream.Receive() {
			return nil, false
		}
		return stream.Msg().GetData(), true
	}, err: stream.Err, close: func() error {
		cancel()
		return stream.Close()
	}}
	if err := r.first(); err != nil {
		return nil, err
	}
	return r, nil
}

// chunkReader reads a stream of data chunks.
type chunkReader struct {
	recv  func() ([]byte, bool)
	err   func() error
	close func() error
	buf   []byte
	done  bool
}

// first reads the first chunk, returning the stream's error if it has none.
func (r *chunkReader) first() error {
	b, ok := r.recv()
	if !ok {
		err := apiconv.FromConnect(r.err())
		_ = r.close()
		if err == nil {
			err = fmt.Errorf("get file: the server sent nothing: %w", sandbox.ErrUnavailable)
		}
		return err
	}
	r.buf = b
	return nil
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		b, ok := r.recv()
		if !ok {
			r.done = true
			if err := r.err(); err != nil {
				return 0, apiconv.FromConnect(err)
			}
			return 0, io.EOF
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *chunkReader) Close() error {
	err := r.close()
	if errors.Is(err, context.Canceled) || connect.CodeOf(err) == connect.CodeCanceled {
		return nil
	}
	return apiconv.FromConnect(err)
}

// StatFile describes path in sandbox id's guest.
func (c *Client) StatFile(ctx context.Context, id, path string, o sandbox.FileOptions) (sandbox.FileInfo, error) {
	res, err := call(ctx, c.guest.StatFile, &pb.FileRequest{Id: id, Path: path, User: o.User})
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	return apiconv.FileInfoFromPB(res.GetFile()), nil
}

// ListDir lists dir in sandbox id's guest, depth levels down.
func (c *Client) ListDir(ctx context.Context, id, dir string, depth int, o sandbox.FileOptions) ([]sandbox.FileInfo, error) {
	if depth < 0 || depth > 1<<20 {
		return nil, fmt.Errorf("list %q: depth %d: give 1 or more: %w", dir, depth, sandbox.ErrInvalid)
	}
	res, err := call(ctx, c.guest.ListDir, &pb.ListDirRequest{Dir: &pb.FileRequest{Id: id, Path: dir, User: o.User}, Depth: int32(depth)})
	if err != nil {
		return nil, err
	}
	out := make([]sandbox.FileInfo, 0, len(res.GetFiles()))
	for _, f := range res.GetFiles() {
		out = append(out, apiconv.FileInfoFromPB(f))
	}
	return out, nil
}

// MakeDir creates dir and its parents in sandbox id's guest.
func (c *Client) MakeDir(ctx context.Context, id, dir string, o sandbox.FileOptions) error {
	_, err := call(ctx, c.guest.MakeDir, &pb.FileRequest{Id: id, Path: dir, User: o.User})
	return err
}

// Chmod sets path's permission bits in sandbox id's guest.
func (c *Client) Chmod(ctx context.Context, id, path string, mode fs.FileMode, o sandbox.FileOptions) error {
	_, err := call(ctx, c.guest.Chmod, &pb.ChmodRequest{File: &pb.FileRequest{Id: id, Path: path, User: o.User}, Mode: uint32(mode.Perm())})
	return err
}

// RemoveFile removes path, recursively, in sandbox id's guest.
func (c *Client) RemoveFile(ctx context.Context, id, path string, o sandbox.FileOptions) error {
	_, err := call(ctx, c.guest.RemoveFile, &pb.FileRequest{Id: id, Path: path, User: o.User})
	return err
}

// WatchDir reports the changes under dir in sandbox id's guest until ctx
// ends or the watcher is closed. It returns once the watch is in place.
func (c *Client) WatchDir(ctx context.Context, id, dir string, recursive bool, o sandbox.FileOptions) (sandbox.Watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.guest.WatchDir(ctx, connect.NewRequest(&pb.WatchDirRequest{Dir: &pb.FileRequest{Id: id, Path: dir, User: o.User}, Recursive: recursive}))
	if err != nil {
		cancel()
		return nil, apiconv.FromConnect(err)
	}
	if !stream.Receive() {
		err := apiconv.FromConnect(stream.Err())
		_ = stream.Close()
		cancel()
		if err == nil {
			err = fmt.Errorf("watch %q: the server ended the watch at once: %w", dir, sandbox.ErrUnavailable)
		}
		return nil, err
	}
	w := &watcher{events: make(chan sandbox.FileEvent, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.events)
		for stream.Receive() {
			ev := sandbox.FileEvent{Name: stream.Msg().GetName(), Type: apiconv.EventTypeFromPB(stream.Msg().GetType())}
			select {
			case w.events <- ev:
			case <-ctx.Done():
			}
		}
		if err := stream.Err(); err != nil && ctx.Err() == nil {
			w.err = apiconv.FromConnect(err)
		}
		_ = stream.Close()
	}()
	return w, nil
}

// watcher delivers a WatchDir stream's events.
type watcher struct {
	events chan sandbox.FileEvent
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
}

func (w *watcher) Events() <-chan sandbox.FileEvent { return w.events }

func (w *watcher) Err() error {
	<-w.done
	return w.err
}

func (w *watcher) Close() {
	w.cancel()
	<-w.done
}
