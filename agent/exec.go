package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/agent/internal/spec/process"
)

// ExecConfig describes a process to run in the guest.
type ExecConfig struct {
	// Args is the command and its arguments; Args[0] is looked up in PATH
	// unless it contains a slash.
	Args []string
	// Env adds KEY=VALUE entries to the default environment.
	Env []string
	// Dir is the working directory; empty means the default (the image's,
	// else the user's home). A relative Dir is relative to the home.
	Dir string
	// User runs the process as this guest user; empty means the default.
	User string
	// TTY runs the process on a terminal of Rows×Cols (0 means 24×80);
	// its output then all arrives as Stdout.
	TTY        bool
	Rows, Cols uint16
	// Stdin gives the process a stdin pipe (Process.Stdin); without it the
	// process reads /dev/null. A TTY process always has input.
	Stdin bool
	// Tag names the process for Connect-by-tag (envd's tag).
	Tag string
	// Stdout and Stderr receive the process's output. When nil, the output
	// is readable from Process.Stdout and Process.Stderr instead, which
	// must then be read (or closed) for the process to make progress.
	Stdout, Stderr io.Writer
}

// Process is a process running in the guest, started by Exec.
type Process struct {
	// PID is the process's ID in the guest.
	PID uint32
	// Stdin writes to the process's input (nil unless ExecConfig.Stdin or
	// TTY); closing it is end of file (for a TTY: the end of input sent).
	Stdin io.WriteCloser
	// Stdout and Stderr are the output when ExecConfig did not name
	// writers for them; nil otherwise.
	Stdout, Stderr io.ReadCloser

	c       *Client
	tty     bool
	stream  eventStream
	cancel  context.CancelFunc // ends the stream
	stop    func() bool        // detaches the kill-on-cancel hook
	execCtx context.Context
	owned   bool // started by Exec: Close and cancellation kill it
	// attachCtx is Attach's context: when it ends, the handle detaches.
	attachCtx context.Context

	done     chan struct{} // closed when the end event or an error arrived
	end      *pb.ProcessEvent_EndEvent
	err      error
	killOnce sync.Once
}

// Exec starts a process in the guest. Cancelling ctx before the process
// ends kills it (SIGKILL). A missing executable gives an *ExecError with
// ExitCode 127, one that cannot be executed 126.
func (c *Client) Exec(ctx context.Context, ec ExecConfig) (*Process, error) {
	req, err := startRequest(ec)
	if err != nil {
		return nil, err
	}
	// The stream lives as long as the process, not as long as ctx: a
	// cancelled ctx kills the process, and the stream then reports its end.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := c.proc.Start(sctx, req)
	if err != nil {
		cancel()
		return nil, c.wrap(ctx, "exec", err)
	}
	return c.follow(ctx, startStream{stream}, cancel, followConfig{
		op: "exec", killOnCancel: true, tty: ec.TTY, stdin: ec.Stdin || ec.TTY,
		stdout: ec.Stdout, stderr: ec.Stderr,
		startErr: func(err error) error { return c.execError(ctx, ec.Args[0], err) },
	})
}

// startRequest is the Start request of ec.
func startRequest(ec ExecConfig) (*connect.Request[pb.StartRequest], error) {
	if len(ec.Args) == 0 || ec.Args[0] == "" {
		return nil, fmt.Errorf("agent exec: no command: %w", ErrInvalid)
	}
	env := map[string]string{}
	for _, kv := range ec.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("agent exec: env %q is not KEY=VALUE: %w", kv, ErrInvalid)
		}
		env[k] = v
	}
	msg := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: ec.Args[0], Args: ec.Args[1:], Envs: env}}
	if ec.Dir != "" {
		msg.Process.Cwd = &ec.Dir
	}
	if ec.Tag != "" {
		msg.Tag = &ec.Tag
	}
	if ec.TTY {
		msg.Pty = &pb.PTY{Size: &pb.PTY_Size{Rows: uint32(ec.Rows), Cols: uint32(ec.Cols)}}
	} else {
		msg.Stdin = &ec.Stdin
	}
	req := connect.NewRequest(msg)
	setUser(req.Header(), ec.User)
	return req, nil
}

// outputHeader and outputConsole are the agent's request header that sends
// a process's output to the guest's console, and its value (see
// agent/server.OutputHeader).
const (
	outputHeader  = "Kindling-Output"
	outputConsole = "console"
)

// Spawn starts a process in the guest that outlives the call and the
// client: its standard output and error are the guest's console (the
// agent's own output: the serial console, the sandbox's console log on
// the host, when the agent is init) and its input is /dev/null. It
// returns the process's PID once the process has started; nothing on the
// client's side ends it (Attach, Signal by PID and Processes still work).
// ec must not ask for a terminal, stdin or output writers. A missing or
// non-executable program gives an *ExecError as with Exec; an agent that
// cannot send output to the console (one older than this client) matches
// ErrNotSupported, and the process it started is killed.
func (c *Client) Spawn(ctx context.Context, ec ExecConfig) (uint32, error) {
	if ec.TTY || ec.Stdin || ec.Stdout != nil || ec.Stderr != nil {
		return 0, fmt.Errorf("agent spawn: a process whose output goes to the console has no terminal, stdin or output writers: %w", ErrInvalid)
	}
	req, err := startRequest(ec)
	if err != nil {
		return 0, err
	}
	req.Header().Set(outputHeader, outputConsole)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream, not the process
	stream, err := c.proc.Start(sctx, req)
	if err != nil {
		return 0, c.wrap(ctx, "spawn", err)
	}
	defer stream.Close()
	p, err := c.follow(ctx, startStream{stream}, cancel, followConfig{
		op: "spawn", stdout: io.Discard, stderr: io.Discard,
		startErr: func(err error) error { return c.execError(ctx, ec.Args[0], err) },
	})
	if err != nil {
		return 0, err
	}
	if stream.ResponseHeader().Get(outputHeader) != outputConsole {
		// An older agent streams the output, which would be lost.
		_ = p.Signal(context.WithoutCancel(ctx), syscall.SIGKILL)
		p.cancel()
		<-p.done
		return 0, fmt.Errorf("agent spawn: the guest's agent cannot send a process's output to the console (it is older than this client): %w", ErrNotSupported)
	}
	p.cancel()
	<-p.done
	return p.PID, nil
}

// eventStream is a stream of process events (Start's or Connect's).
type eventStream interface {
	Receive() bool
	Err() error
	Close() error
	event() *pb.ProcessEvent
}

type startStream struct {
	*connect.ServerStreamForClient[pb.StartResponse]
}

func (s startStream) event() *pb.ProcessEvent { return s.Msg().GetEvent() }

type connectStream struct {
	*connect.ServerStreamForClient[pb.ConnectResponse]
}

func (s connectStream) event() *pb.ProcessEvent { return s.Msg().GetEvent() }

// followConfig says how to follow a process's event stream.
type followConfig struct {
	op             string
	killOnCancel   bool // ctx ending kills the process (Exec), else detaches (Attach)
	tty, stdin     bool
	stdout, stderr io.Writer
	startErr       func(error) error // maps an error before the start event
}

// follow waits for the start event, then returns the process with its
// events pumped in the background. cancel ends the stream.
func (c *Client) follow(ctx context.Context, stream eventStream, cancel context.CancelFunc, fc followConfig) (*Process, error) {
	first := make(chan bool, 1)
	go func() { first <- stream.Receive() }()
	var ok bool
	select {
	case ok = <-first:
	case <-ctx.Done():
		cancel()
		<-first
		_ = stream.Close()
		return nil, fmt.Errorf("agent %s: %w", fc.op, context.Cause(ctx))
	}
	if !ok {
		err := stream.Err()
		_ = stream.Close()
		cancel()
		if err == nil {
			err = &UnavailableError{Socket: c.socket, Err: errors.New("stream ended before the start event")}
		}
		return nil, fc.startErr(err)
	}
	start := stream.event().GetStart()
	if start == nil {
		_ = stream.Close()
		cancel()
		return nil, fmt.Errorf("agent %s: first event is not the start event: %w", fc.op, &UnavailableError{Socket: c.socket, Err: errors.New("protocol error")})
	}
	p := &Process{PID: start.GetPid(), c: c, tty: fc.tty, stream: stream, cancel: cancel, done: make(chan struct{}), execCtx: ctx}
	stdout, stderr := fc.stdout, fc.stderr
	var outPipe, errPipe *io.PipeWriter
	if stdout == nil {
		r, w := io.Pipe()
		p.Stdout, outPipe, stdout = r, w, w
	}
	if stderr == nil {
		r, w := io.Pipe()
		p.Stderr, errPipe, stderr = r, w, w
	}
	if fc.stdin {
		p.Stdin = &stdinWriter{p: p}
	}
	if fc.killOnCancel {
		p.owned = true
		p.stop = context.AfterFunc(ctx, func() { p.kill() })
	} else {
		p.execCtx, p.attachCtx = context.Background(), ctx
		p.stop = context.AfterFunc(ctx, cancel)
	}
	go p.pump(stdout, stderr, outPipe, errPipe)
	return p, nil
}

// AttachConfig says how to attach to a running process.
type AttachConfig struct {
	// TTY routes Stdin to the process's terminal (it was started with one).
	TTY bool
	// Stdin gives the handle an input writer.
	Stdin bool
	// Stdout and Stderr as in ExecConfig.
	Stdout, Stderr io.Writer
}

// Attach follows a process already running in the guest (started by this
// or another client, found by PID): its output from now on and its end.
// Cancelling ctx detaches; it does not kill the process.
func (c *Client) Attach(ctx context.Context, pid uint32, ac AttachConfig) (*Process, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := c.proc.Connect(sctx, connect.NewRequest(&pb.ConnectRequest{Process: pidSelector(pid)}))
	if err != nil {
		cancel()
		return nil, c.wrap(ctx, fmt.Sprintf("attach %d", pid), err)
	}
	op := fmt.Sprintf("attach %d", pid)
	return c.follow(ctx, connectStream{stream}, cancel, followConfig{
		op: op, tty: ac.TTY, stdin: ac.Stdin || ac.TTY, stdout: ac.Stdout, stderr: ac.Stderr,
		startErr: func(err error) error { return c.wrap(ctx, op, err) },
	})
}

// ProcessInfo describes a process the agent started that is still running.
type ProcessInfo struct {
	PID  uint32
	Tag  string
	Args []string
	Env  map[string]string // the request's additions
	Dir  string            // as requested ("" for the default)
}

// Processes lists the running processes the agent started.
func (c *Client) Processes(ctx context.Context) ([]ProcessInfo, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	res, err := c.proc.List(ctx, connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		return nil, c.wrap(ctx, "list processes", err)
	}
	var out []ProcessInfo
	for _, p := range res.Msg.GetProcesses() {
		cfg := p.GetConfig()
		out = append(out, ProcessInfo{PID: p.GetPid(), Tag: p.GetTag(), Args: append([]string{cfg.GetCmd()}, cfg.GetArgs()...),
			Env: cfg.GetEnvs(), Dir: cfg.GetCwd()})
	}
	return out, nil
}

// setUser names the user the way envd expects it: Basic auth, no password.
func setUser(h interface{ Set(string, string) }, user string) {
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
}

// execError maps a failed start: a missing or non-executable program is an
// *ExecError.
func (c *Client) execError(ctx context.Context, cmd string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeNotFound:
			return fmt.Errorf("agent exec: %w", &ExecError{Cmd: cmd, NotFound: true, Message: ce.Message()})
		case connect.CodePermissionDenied:
			return fmt.Errorf("agent exec: %w", &ExecError{Cmd: cmd, Message: ce.Message()})
		}
	}
	return c.wrap(ctx, "exec", err)
}

// pump forwards the stream's events until the end.
func (p *Process) pump(stdout, stderr io.Writer, outPipe, errPipe *io.PipeWriter) {
	var err error
	for p.stream.Receive() {
		ev := p.stream.event()
		switch e := ev.GetEvent().(type) {
		case *pb.ProcessEvent_Data:
			var werr error
			switch o := e.Data.GetOutput().(type) {
			case *pb.ProcessEvent_DataEvent_Stdout:
				_, werr = stdout.Write(o.Stdout)
			case *pb.ProcessEvent_DataEvent_Pty:
				_, werr = stdout.Write(o.Pty)
			case *pb.ProcessEvent_DataEvent_Stderr:
				_, werr = stderr.Write(o.Stderr)
			}
			if werr != nil && !errors.Is(werr, io.ErrClosedPipe) {
				err = fmt.Errorf("agent exec: write output: %w", werr)
			}
		case *pb.ProcessEvent_End:
			p.end = e.End
		}
		if p.end != nil || err != nil {
			break
		}
	}
	if err == nil && p.end == nil && p.attachCtx != nil && p.attachCtx.Err() != nil {
		err = fmt.Errorf("agent attach %d: detached: %w", p.PID, context.Cause(p.attachCtx))
	}
	if err == nil && p.end == nil {
		err = p.stream.Err()
		if err == nil {
			err = errors.New("stream ended without the end event")
		}
		err = p.c.wrap(context.Background(), "exec: process events", &UnavailableError{Socket: p.c.socket, Err: err})
	}
	p.err = err
	_ = p.stream.Close()
	p.cancel()
	if outPipe != nil {
		outPipe.CloseWithError(err)
	}
	if errPipe != nil {
		errPipe.CloseWithError(err)
	}
	p.stop()
	close(p.done)
}

// ExitStatus describes how a process ended.
type ExitStatus struct {
	// Code is the exit status, or 128+N for a process killed by signal N,
	// as a shell reports it.
	Code int
	// Signal is the signal that ended the process, or 0.
	Signal syscall.Signal
	// Status is the agent's description ("exit status 1", "signal: killed").
	Status string
}

// Wait waits for the process to end and returns its exit code (128+N if
// signal N killed it). An error means the end is unknown: the agent went
// away (ErrUnavailable) or ctx ended the wait (the process goes on). If
// the Exec context was cancelled, the process was killed and the error
// says so.
func (p *Process) Wait(ctx context.Context) (int, error) {
	st, err := p.WaitStatus(ctx)
	return st.Code, err
}

// WaitStatus is Wait with the whole exit status.
func (p *Process) WaitStatus(ctx context.Context) (ExitStatus, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return ExitStatus{Code: -1}, fmt.Errorf("agent wait for process %d: %w", p.PID, context.Cause(ctx))
	}
	if p.err != nil {
		return ExitStatus{Code: -1}, p.err
	}
	st := exitStatus(p.end)
	if err := p.execCtx.Err(); err != nil {
		return st, fmt.Errorf("agent exec: process %d killed: %w", p.PID, context.Cause(p.execCtx))
	}
	return st, nil
}

// exitStatus reads an end event.
func exitStatus(e *pb.ProcessEvent_EndEvent) ExitStatus {
	st := ExitStatus{Code: int(e.GetExitCode()), Status: e.GetStatus()}
	if e.GetExited() {
		return st
	}
	name, ok := strings.CutPrefix(e.GetStatus(), "signal: ")
	if ok {
		name = strings.TrimSuffix(name, " (core dumped)")
		for n := syscall.Signal(1); n < 65; n++ {
			if n.String() == name {
				st.Signal, st.Code = n, 128+int(n)
				break
			}
		}
	}
	return st
}

// Done is closed when the process has ended (or its stream failed).
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process.
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	ctx, cancel := p.c.withTimeout(ctx)
	defer cancel()
	_, err := p.c.proc.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{
		Process: pidSelector(p.PID), Signal: pb.Signal(sig),
	}))
	return p.c.wrap(ctx, fmt.Sprintf("signal process %d", p.PID), err)
}

// Resize sets the size of the process's terminal.
func (p *Process) Resize(ctx context.Context, rows, cols uint16) error {
	ctx, cancel := p.c.withTimeout(ctx)
	defer cancel()
	_, err := p.c.proc.Update(ctx, connect.NewRequest(&pb.UpdateRequest{
		Process: pidSelector(p.PID), Pty: &pb.PTY{Size: &pb.PTY_Size{Rows: uint32(rows), Cols: uint32(cols)}},
	}))
	return p.c.wrap(ctx, fmt.Sprintf("resize process %d", p.PID), err)
}

// Close releases the handle. A process started by Exec that is still
// running is killed; an attached one is left running (detached).
func (p *Process) Close() error {
	select {
	case <-p.done:
	default:
		if !p.owned {
			p.cancel()
			<-p.done
			break
		}
		p.kill()
		select {
		case <-p.done:
		case <-time.After(p.c.cfg.RequestTimeout):
			p.cancel()
			<-p.done
		}
	}
	if s, ok := p.Stdin.(*stdinWriter); ok {
		s.abort()
	}
	if p.Stdout != nil {
		_ = p.Stdout.Close()
	}
	if p.Stderr != nil {
		_ = p.Stderr.Close()
	}
	return nil
}

// kill sends SIGKILL once, on a context of its own.
func (p *Process) kill() {
	p.killOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.c.cfg.RequestTimeout)
		defer cancel()
		if err := p.Signal(ctx, syscall.SIGKILL); err != nil && !errors.Is(err, ErrNotFound) {
			// The agent is unreachable: end the stream, so Wait returns.
			p.cancel()
		}
	})
}

func pidSelector(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}

// stdinWriter sends input over one ordered StreamInput call, opened on the
// first write.
type stdinWriter struct {
	p      *Process
	mu     sync.Mutex // guards the fields below
	stream *connect.ClientStreamForClient[pb.StreamInputRequest, pb.StreamInputResponse]
	cancel context.CancelFunc
	closed bool
}

func (w *stdinWriter) input(b []byte) *pb.ProcessInput {
	if w.p.tty {
		return &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: b}}
	}
	return &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: b}}
}

// Write sends b to the process.
func (w *stdinWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	if w.stream == nil {
		ctx, cancel := context.WithCancel(context.Background())
		w.stream, w.cancel = w.p.c.proc.StreamInput(ctx), cancel
		if err := w.stream.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{
			Start: &pb.StreamInputRequest_StartEvent{Process: pidSelector(w.p.PID)}}}); err != nil {
			return 0, w.failed(err)
		}
	}
	for off := 0; off < len(b); {
		n := min(len(b)-off, 32<<10)
		chunk := make([]byte, n)
		copy(chunk, b[off:off+n])
		if err := w.stream.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{
			Data: &pb.StreamInputRequest_DataEvent{Input: w.input(chunk)}}}); err != nil {
			return off, w.failed(err)
		}
		off += n
	}
	return len(b), nil
}

// failed turns a send error into the agent's answer when there is one.
func (w *stdinWriter) failed(err error) error {
	if errors.Is(err, io.EOF) {
		_, err = w.stream.CloseAndReceive()
	}
	return w.p.c.wrap(context.Background(), fmt.Sprintf("stdin of process %d", w.p.PID), err)
}

// Close ends the input: every byte written has reached the process, then
// (without a terminal) its stdin is closed.
func (w *stdinWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	var err error
	if w.stream != nil {
		_, err = w.stream.CloseAndReceive()
		w.cancel()
		if err != nil {
			return w.p.c.wrap(context.Background(), fmt.Sprintf("stdin of process %d", w.p.PID), err)
		}
	}
	if w.p.tty {
		return nil
	}
	ctx, cancel := w.p.c.withTimeout(context.Background())
	defer cancel()
	_, err = w.p.c.proc.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSelector(w.p.PID)}))
	if err != nil && connect.CodeOf(err) == connect.CodeNotFound {
		return nil // it has already ended
	}
	return w.p.c.wrap(ctx, fmt.Sprintf("close stdin of process %d", w.p.PID), err)
}

// abort drops an open input stream without waiting.
func (w *stdinWriter) abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.cancel != nil {
		w.cancel()
		// Closing the request side ends the transport's body copy.
		_, _ = w.stream.CloseAndReceive()
	}
}
