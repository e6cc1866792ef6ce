package server

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/creack/pty"

	pb "github.com/kindling-vm/kindling/agent/internal/spec/process"
)

// Sizes and times of a process's output handling.
const (
	chunkSize   = 32 << 10               // largest data event
	subBuffer   = 16                     // events queued per subscriber
	drainIdle   = 100 * time.Millisecond // output silence after exit that ends it
	defaultRows = 24
	defaultCols = 80
)

// proc is one process the agent started.
type proc struct {
	pid  uint32
	tag  *string
	cfg  *pb.ProcessConfig
	os   *os.Process
	tty  *os.File   // terminal master, nil without a terminal
	outs []*os.File // read ends of stdout and stderr, or the master
	// console: its output goes to the agent's console, not to followers.
	console bool

	stdinMu sync.Mutex // guards stdin
	stdin   *os.File   // write end of stdin; nil if none or closed

	subsMu sync.Mutex // guards subs and end
	subs   map[*sub]struct{}
	end    *pb.ProcessEvent // set once, when the process has ended

	readers    sync.WaitGroup
	activity   atomic.Int64 // bumped by every read and every delivery
	publishing atomic.Int32 // readers now delivering an event
	done       chan struct{}
}

// sub is one stream following a process's events.
type sub struct {
	c    chan *pb.ProcessEvent
	gone chan struct{}
	once sync.Once
}

// subscribe adds a follower. If the process has already ended it returns
// nil and the end event instead.
func (p *proc) subscribe() (*sub, *pb.ProcessEvent) {
	p.subsMu.Lock()
	defer p.subsMu.Unlock()
	if p.end != nil {
		return nil, p.end
	}
	s := &sub{c: make(chan *pb.ProcessEvent, subBuffer), gone: make(chan struct{})}
	p.subs[s] = struct{}{}
	return s, nil
}

func (p *proc) unsubscribe(s *sub) {
	s.once.Do(func() { close(s.gone) })
	p.subsMu.Lock()
	delete(p.subs, s)
	p.subsMu.Unlock()
}

// publish delivers ev to every follower, waiting for slow ones (the
// process's output then waits too, as it would writing to a pipe). With no
// follower, output is dropped, as envd does.
func (p *proc) publish(ev *pb.ProcessEvent, final bool) {
	p.subsMu.Lock()
	if final {
		p.end = ev
	}
	subs := make([]*sub, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.subsMu.Unlock()
	for _, s := range subs {
		select {
		case s.c <- ev:
		case <-s.gone:
		}
		p.activity.Add(1)
	}
}

// read forwards one output file as data events until it ends.
func (p *proc) read(f *os.File, wrap func([]byte) *pb.ProcessEvent_DataEvent) {
	defer p.readers.Done()
	buf := make([]byte, chunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			p.activity.Add(1)
			data := make([]byte, n)
			copy(data, buf[:n])
			p.publishing.Add(1)
			p.publish(&pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: wrap(data)}}, false)
			p.publishing.Add(-1)
		}
		if err != nil {
			return
		}
	}
}

// wait waits for the process to end and for its output, then publishes the
// end event.
func (s *Server) wait(p *proc) {
	ws, werr := s.reaper.Wait(p.os)
	p.drain()
	p.closeStdin()
	for _, f := range p.outs {
		_ = f.Close()
	}
	end := endEvent(ws, werr)
	s.procs.remove(p)
	p.publish(&pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: end}}, true)
	close(p.done)
	if p.console {
		// Its output is on the console: say there how it ended.
		s.log.Info("process ended", "pid", p.pid, "cmd", p.cfg.GetCmd(), "status", end.Status)
		return
	}
	s.log.Debug("process ended", "pid", p.pid, "status", end.Status)
}

// drain waits for the output readers to finish. Output still held open by
// a process the exited one left behind would keep them going for ever, so
// once the output has been silent (nothing read, nothing being delivered)
// for drainIdle it is cut off.
func (p *proc) drain() {
	done := make(chan struct{})
	go func() { p.readers.Wait(); close(done) }()
	last := p.activity.Load()
	t := time.NewTicker(drainIdle)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			now := p.activity.Load()
			if now == last && p.publishing.Load() == 0 {
				for _, f := range p.outs {
					_ = f.Close()
				}
				<-done
				return
			}
			last = now
		}
	}
}

// endEvent describes how a process ended, in envd's terms: exit_code is the
// exit status, or -1 when a signal ended it; status reads like Go's
// os.ProcessState ("exit status 1", "signal: killed").
func endEvent(ws syscall.WaitStatus, werr error) *pb.ProcessEvent_EndEvent {
	if werr != nil {
		msg := werr.Error()
		return &pb.ProcessEvent_EndEvent{ExitCode: -1, Status: "unknown", Error: &msg}
	}
	e := &pb.ProcessEvent_EndEvent{ExitCode: -1}
	switch {
	case ws.Exited():
		e.Exited = true
		e.ExitCode = int32(ws.ExitStatus())
		e.Status = fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		e.Status = "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			e.Status += " (core dumped)"
		}
	default:
		e.Status = fmt.Sprintf("wait status %#x", uint32(ws))
	}
	if !(e.Exited && e.ExitCode == 0) {
		msg := e.Status
		e.Error = &msg
	}
	return e
}

// writeInput writes process input to its stdin or its terminal.
func (p *proc) writeInput(in *pb.ProcessInput) error {
	switch v := in.GetInput().(type) {
	case *pb.ProcessInput_Pty:
		if p.tty == nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has no terminal: send stdin", p.pid))
		}
		if _, err := p.tty.Write(v.Pty); err != nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("write to terminal of process %d: %w", p.pid, err))
		}
	case *pb.ProcessInput_Stdin:
		if p.tty != nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has a terminal: send pty input", p.pid))
		}
		p.stdinMu.Lock()
		defer p.stdinMu.Unlock()
		if p.stdin == nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d: stdin not enabled or closed", p.pid))
		}
		if _, err := p.stdin.Write(v.Stdin); err != nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("write to stdin of process %d: %w", p.pid, err))
		}
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input: neither stdin nor pty"))
	}
	return nil
}

// closeStdin closes the process's stdin (EOF); closing twice is no error.
func (p *proc) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil {
		_ = p.stdin.Close()
		p.stdin = nil
	}
}

// signal sends sig to the process. A process that has ended is not found.
func (p *proc) signal(sig syscall.Signal) error {
	err := p.os.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process %d: already ended", p.pid))
	}
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("signal process %d: %w", p.pid, err))
	}
	return nil
}

// resize sets the terminal size.
func (p *proc) resize(rows, cols uint32) error {
	if p.tty == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has no terminal to resize", p.pid))
	}
	if err := pty.Setsize(p.tty, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)}); err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("resize terminal of process %d: %w", p.pid, err))
	}
	return nil
}

// procTable holds the running processes.
type procTable struct {
	mu    sync.Mutex // guards byPID
	byPID map[uint32]*proc
}

func newProcTable() *procTable { return &procTable{byPID: map[uint32]*proc{}} }

func (t *procTable) add(p *proc) {
	t.mu.Lock()
	t.byPID[p.pid] = p
	t.mu.Unlock()
}

func (t *procTable) remove(p *proc) {
	t.mu.Lock()
	if t.byPID[p.pid] == p {
		delete(t.byPID, p.pid)
	}
	t.mu.Unlock()
}

// find returns the running process a selector names.
func (t *procTable) find(sel *pb.ProcessSelector) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch v := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		if p, ok := t.byPID[v.Pid]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process %d not found", v.Pid))
	case *pb.ProcessSelector_Tag:
		for _, p := range t.byPID {
			if p.tag != nil && *p.tag == v.Tag {
				return p, nil
			}
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", v.Tag))
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process selector: neither pid nor tag"))
	}
}

func (t *procTable) list() []*proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*proc, 0, len(t.byPID))
	for _, p := range t.byPID {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// killAll kills every running process and waits (a little) for them.
func (t *procTable) killAll() {
	ps := t.list()
	for _, p := range ps {
		_ = p.os.Signal(syscall.SIGKILL)
	}
	deadline := time.After(2 * time.Second)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
			return
		}
	}
}
