package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	pb "github.com/kindling-vm/kindling/agent/internal/spec/process"
	"github.com/kindling-vm/kindling/agent/internal/spec/process/processconnect"
)

// defaultPath is PATH for processes when neither the agent's environment
// nor the image sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Keep-alive events on an otherwise quiet stream, so proxies and clients do
// not time it out: every Keepalive-Ping-Interval seconds, as envd.
const (
	keepaliveHeader  = "Keepalive-Ping-Interval"
	defaultKeepalive = 90 * time.Second
)

type processService struct{ s *Server }

var _ processconnect.ProcessHandler = (*processService)(nil)

func keepaliveInterval(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get(keepaliveHeader)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return defaultKeepalive
}

// Start starts a process and streams its events: start (with the pid),
// output, end. The process does not depend on the stream: a client that
// hangs up leaves it running (it can Connect again), as envd does. A
// Connect-Timeout-Ms on the request kills it when the time is up.
func (ps *processService) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	s := ps.s
	acct, err := s.account(req.Header())
	if err != nil {
		return err
	}
	var console bool
	switch v := req.Header().Get(OutputHeader); v {
	case "":
	case OutputConsole:
		if s.console == nil {
			return connect.NewError(connect.CodeFailedPrecondition, errors.New("start: this agent has no console to send the output to"))
		}
		if req.Msg.Pty != nil || req.Msg.GetStdin() {
			return connect.NewError(connect.CodeInvalidArgument, errors.New("start: a process whose output goes to the console has no terminal and no stdin"))
		}
		console = true
	default:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("start: %s %q: the one value is %q", OutputHeader, v, OutputConsole))
	}
	p, follow, err := s.start(acct, req.Msg, console)
	if err != nil {
		return err
	}
	defer p.unsubscribe(follow)
	if console {
		stream.ResponseHeader().Set(OutputHeader, OutputConsole)
	}
	if ms, err := strconv.ParseInt(req.Header().Get("Connect-Timeout-Ms"), 10, 64); err == nil && ms > 0 {
		t := time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { _ = p.os.Signal(syscall.SIGKILL) })
		go func() { <-p.done; t.Stop() }()
	}
	send := func(ev *pb.ProcessEvent) error { return stream.Send(&pb.StartResponse{Event: ev}) }
	return follow.stream(ctx, p, send, keepaliveInterval(req.Header()))
}

// Connect follows a running process: its start event, then its output from
// now on and its end.
func (ps *processService) Connect(ctx context.Context, req *connect.Request[pb.ConnectRequest], stream *connect.ServerStream[pb.ConnectResponse]) error {
	p, err := ps.s.procs.find(req.Msg.GetProcess())
	if err != nil {
		return err
	}
	send := func(ev *pb.ProcessEvent) error { return stream.Send(&pb.ConnectResponse{Event: ev}) }
	follow, end := p.subscribe()
	if err := send(startEvent(p.pid)); err != nil {
		if follow != nil {
			p.unsubscribe(follow)
		}
		return err
	}
	if follow == nil {
		return send(end)
	}
	defer p.unsubscribe(follow)
	return follow.stream(ctx, p, send, keepaliveInterval(req.Header()))
}

func startEvent(pid uint32) *pb.ProcessEvent {
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: pid}}}
}

// stream sends a follower's events until the end event or the caller
// hangs up, with keep-alives in between.
func (f *sub) stream(ctx context.Context, p *proc, send func(*pb.ProcessEvent) error, keepalive time.Duration) error {
	t := time.NewTicker(keepalive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case ev := <-f.c:
			if err := send(ev); err != nil {
				return err
			}
			if _, end := ev.Event.(*pb.ProcessEvent_End); end {
				return nil
			}
			t.Reset(keepalive)
		}
	}
}

// start validates a start request, starts the process and returns it with
// a follower subscribed before the process could write anything. Errors
// are Connect errors: NotFound for an executable that does not exist,
// PermissionDenied for one that cannot be executed (docker's 127 and 126),
// InvalidArgument for a bad request or working directory. With console,
// the process writes to the agent's console and reads /dev/null.
func (s *Server) start(acct *account, req *pb.StartRequest, console bool) (*proc, *sub, error) {
	cfg := req.GetProcess()
	if cfg.GetCmd() == "" {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, errors.New("start: no command"))
	}
	defWorkdir, _ := s.defaults.get()
	dir, err := s.workdir(acct, cfg.Cwd, defWorkdir)
	if err != nil {
		return nil, nil, err
	}
	env := s.processEnv(acct, cfg.GetEnvs())
	path, err := findExecutable(cfg.GetCmd(), lookupEnv(env, "PATH"), dir)
	if err != nil {
		return nil, nil, err
	}
	attr := &syscall.SysProcAttr{}
	if os.Geteuid() == 0 {
		attr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid, Groups: acct.groups}
	} else if acct.uid != uint32(os.Geteuid()) {
		return nil, nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("start: the agent runs as uid %d, not root, so it cannot run processes as user %q", os.Geteuid(), acct.name))
	}

	p := &proc{cfg: cfg, tag: req.Tag, subs: map[*sub]struct{}{}, done: make(chan struct{})}
	var childFiles []*os.File
	closeChild := func() {
		for _, f := range childFiles {
			_ = f.Close()
		}
	}
	fail := func(err error) (*proc, *sub, error) {
		closeChild()
		for _, f := range p.outs {
			_ = f.Close()
		}
		p.closeStdin()
		return nil, nil, err
	}
	switch {
	case console:
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: %w", err)))
		}
		// A duplicate, so that closing the child's ends keeps the console.
		fd, err := unix.FcntlInt(s.console.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			_ = devnull.Close()
			return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: the console: %w", err)))
		}
		out := os.NewFile(uintptr(fd), "console")
		childFiles = []*os.File{devnull, out, out}
		p.console = true
	case req.Pty != nil:
		master, tty, err := pty.Open()
		if err != nil {
			return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: open terminal: %w", err)))
		}
		rows, cols := req.Pty.GetSize().GetRows(), req.Pty.GetSize().GetCols()
		if rows == 0 || cols == 0 {
			rows, cols = defaultRows, defaultCols
		}
		p.tty, p.outs, childFiles = master, []*os.File{master}, []*os.File{tty, tty, tty}
		if err := pty.Setsize(master, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)}); err != nil {
			return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: terminal size: %w", err)))
		}
		attr.Setsid, attr.Setctty, attr.Ctty = true, true, 0
	default:
		var stdin *os.File
		if req.Stdin == nil || *req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: stdin pipe: %w", err)))
			}
			stdin, p.stdin = r, w
		} else if stdin, err = os.Open(os.DevNull); err != nil {
			return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: %w", err)))
		}
		childFiles = append(childFiles, stdin)
		for range 2 {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("start: output pipe: %w", err)))
			}
			p.outs = append(p.outs, r)
			childFiles = append(childFiles, w)
		}
	}
	follow, _ := p.subscribe()
	argv := append([]string{cfg.GetCmd()}, cfg.GetArgs()...)
	osp, err := s.reaper.Start(func() (*os.Process, error) {
		return os.StartProcess(path, argv, &os.ProcAttr{Dir: dir, Env: env, Files: childFiles, Sys: attr})
	})
	if err != nil {
		return fail(execError(cfg.GetCmd(), err))
	}
	closeChild()
	p.os, p.pid = osp, uint32(osp.Pid)
	s.procs.add(p)
	// The start event goes first to the follower; nothing else can be
	// queued before the readers start.
	follow.c <- startEvent(p.pid)
	switch {
	case p.console:
	case p.tty != nil:
		p.readers.Add(1)
		go p.read(p.tty, func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Pty{Pty: b}}
		})
	default:
		p.readers.Add(2)
		go p.read(p.outs[0], func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Stdout{Stdout: b}}
		})
		go p.read(p.outs[1], func(b []byte) *pb.ProcessEvent_DataEvent {
			return &pb.ProcessEvent_DataEvent{Output: &pb.ProcessEvent_DataEvent_Stderr{Stderr: b}}
		})
	}
	go s.wait(p)
	s.log.Debug("process started", "pid", p.pid, "cmd", cfg.GetCmd(), "user", acct.name)
	return p, follow, nil
}

// workdir resolves and checks a process's working directory. Without one
// requested, a default that does not exist falls back to "/".
func (s *Server) workdir(acct *account, cwd *string, def string) (string, error) {
	requested := cwd != nil && *cwd != ""
	p := def
	if requested {
		p = *cwd
	}
	dir, err := resolvePath(p, acct, "")
	if err != nil {
		return "", connect.NewError(connect.CodeInvalidArgument, err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if !requested {
			return "/", nil
		}
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q does not exist or is not a directory", dir))
	}
	return dir, nil
}

// processEnv builds a process's environment: PATH, HOME, USER and LOGNAME,
// then the defaults (image, /init), then the request's; later wins.
func (s *Server) processEnv(acct *account, req map[string]string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"PATH=" + path, "HOME=" + acct.home, "USER=" + acct.name, "LOGNAME=" + acct.name}
	env = append(env, s.defaults.envList()...)
	for k, v := range req {
		env = append(env, k+"="+v)
	}
	return dedupEnv(env)
}

func lookupEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// findExecutable finds cmd as a shell would: a name with a slash is taken
// as a path (relative to dir), any other is searched for in pathEnv.
func findExecutable(cmd, pathEnv, dir string) (string, error) {
	if strings.Contains(cmd, "/") {
		if !filepath.IsAbs(cmd) {
			cmd = filepath.Join(dir, cmd)
		}
		return cmd, nil
	}
	var notExec string
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		c := filepath.Join(d, cmd)
		fi, err := os.Stat(c)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 != 0 {
			return c, nil
		}
		if notExec == "" {
			notExec = c
		}
	}
	if notExec != "" {
		return "", connect.NewError(connect.CodePermissionDenied, fmt.Errorf("exec %q: %s is not executable", cmd, notExec))
	}
	return "", connect.NewError(connect.CodeNotFound, fmt.Errorf("exec %q: executable file not found in $PATH", cmd))
}

// execError turns a failed exec into a Connect error: NotFound for a
// missing file, PermissionDenied for one that cannot be executed.
func execError(cmd string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("exec %q: no such file or directory", cmd))
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EPERM):
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("exec %q: %w", cmd, err))
	default:
		return connect.NewError(connect.CodeInternal, fmt.Errorf("exec %q: %w", cmd, err))
	}
}

// List lists the running processes.
func (ps *processService) List(_ context.Context, _ *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	res := &pb.ListResponse{}
	for _, p := range ps.s.procs.list() {
		res.Processes = append(res.Processes, &pb.ProcessInfo{Config: p.cfg, Pid: p.pid, Tag: p.tag})
	}
	return connect.NewResponse(res), nil
}

// Update resizes a process's terminal.
func (ps *processService) Update(_ context.Context, req *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	p, err := ps.s.procs.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if req.Msg.Pty != nil {
		if err := p.resize(req.Msg.GetPty().GetSize().GetRows(), req.Msg.GetPty().GetSize().GetCols()); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&pb.UpdateResponse{}), nil
}

// StreamInput writes a stream of input, in order, to one process: the
// first message names it.
func (ps *processService) StreamInput(_ context.Context, stream *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *pb.StreamInputRequest_Start:
			found, err := ps.s.procs.find(ev.Start.GetProcess())
			if err != nil {
				return nil, err
			}
			p = found
		case *pb.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("stream input: data before the start message naming the process"))
			}
			if err := p.writeInput(ev.Data.GetInput()); err != nil {
				return nil, err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StreamInputResponse{}), nil
}

// SendInput writes one piece of input.
func (ps *processService) SendInput(_ context.Context, req *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	p, err := ps.s.procs.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.writeInput(req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.SendInputResponse{}), nil
}

// CloseStdin closes a process's stdin.
func (ps *processService) CloseStdin(_ context.Context, req *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	p, err := ps.s.procs.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.tty != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has a terminal: send Ctrl-D (0x04) instead", p.pid))
	}
	p.closeStdin()
	return connect.NewResponse(&pb.CloseStdinResponse{}), nil
}

// SendSignal signals a process. envd's enum names SIGTERM and SIGKILL;
// kindling's clients also send other signal numbers (SIGINT for Ctrl-C,
// SIGHUP, SIGWINCH…), which the agent accepts too.
func (ps *processService) SendSignal(_ context.Context, req *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	n := int(req.Msg.GetSignal())
	if n < 1 || n > 64 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %d: not a signal number", n))
	}
	p, err := ps.s.procs.find(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.signal(syscall.Signal(n)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.SendSignalResponse{}), nil
}
