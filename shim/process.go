package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-vm/kindling/agent"
)

// process is a task's init or one of its execs: the guest process the
// agent runs for it and its stdio.
type process struct {
	id       string // the exec ID; "" for the init
	terminal bool
	stdin    string
	stdout   string
	stderr   string
	execProc *specs.Process // an exec's process spec

	// signalling is read-held by Kill while it signals the process: the
	// exit is published only once no Kill is still signalling, so that
	// containerd gets Kill's answer before the exit it causes (CRI deletes
	// a task on its exit and closes that task's connection, which would
	// cut off an answer still on its way).
	signalling sync.RWMutex

	mu       sync.Mutex
	proc     *agent.Process // nil until started
	pid      uint32
	exited   bool
	status   uint32
	exitedAt time.Time
	done     chan struct{} // closed at exit
	stdinW   io.WriteCloser
	closers  []io.Closer
}

func newProcess(id string, terminal bool, stdin, stdout, stderr string) *process {
	return &process{id: id, terminal: terminal, stdin: stdin, stdout: stdout, stderr: stderr, done: make(chan struct{})}
}

// openIO opens containerd's FIFOs: the output ones for writing (containerd
// holds their read ends open already), stdin for reading. The output may
// instead be a log URI (file:// or binary://, see logio.go), one for
// both streams; logEnv is a logging program's environment.
func (p *process) openIO(ctx context.Context, logEnv []string) (stdin io.ReadCloser, stdout, stderr io.WriteCloser, err error) {
	if err := checkStdio(p.stdin, p.stdout, p.stderr); err != nil {
		return nil, nil, nil, err
	}
	logTo, toLog, _ := parseLogURI(p.stdout)
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	defer func() {
		if err != nil {
			for _, c := range []io.Closer{stdin, stdout, stderr} {
				if c != nil {
					c.Close()
				}
			}
		}
	}()
	if p.stdin != "" {
		if stdin, err = fifo.OpenFifo(ctx, p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return nil, nil, nil, fmt.Errorf("open stdin %s: %w", p.stdin, err)
		}
	}
	if toLog {
		stdout, stderr, err = openLogURI(logTo, p.terminal, logEnv)
		return stdin, stdout, stderr, err
	}
	if p.stdout != "" {
		if stdout, err = fifo.OpenFifo(octx, p.stdout, syscall.O_WRONLY, 0); err != nil {
			return stdin, nil, nil, fmt.Errorf("open stdout %s: %w", p.stdout, err)
		}
	}
	if p.stderr != "" && !p.terminal {
		if stderr, err = fifo.OpenFifo(octx, p.stderr, syscall.O_WRONLY, 0); err != nil {
			return stdin, stdout, nil, fmt.Errorf("open stderr %s: %w", p.stderr, err)
		}
	}
	return stdin, stdout, stderr, nil
}

// checkStdio checks a process's stdio as containerd gives it: FIFO paths,
// or one log URI for stdout and stderr (file:// or binary://).
func checkStdio(stdin, stdout, stderr string) error {
	if _, ok, _ := parseLogURI(stdin); ok {
		return fmt.Errorf("stdin %q: want a FIFO path (log URIs are for output)", stdin)
	}
	_, toLog, err := parseLogURI(stdout)
	if err != nil {
		return err
	}
	if _, ok, _ := parseLogURI(stderr); stderr != "" && (ok != toLog || (ok && stderr != stdout)) {
		return fmt.Errorf("stdout %q, stderr %q: give both the same log URI, or FIFOs for both", stdout, stderr)
	}
	return nil
}

// start runs args in the guest with the process's stdio (logEnv: see
// openIO). onExit is called
// once with the exit status (255 when the guest went away first).
func (p *process) start(ctx context.Context, c *agent.Client, args []string, logEnv []string, vmGone <-chan struct{}, onExit func(status uint32, at time.Time)) error {
	stdin, stdout, stderr, err := p.openIO(ctx, logEnv)
	if err != nil {
		return err
	}
	ec := agent.ExecConfig{Args: args, User: "root", TTY: p.terminal, Stdin: stdin != nil,
		Stdout: orDiscard(stdout), Stderr: orDiscard(stderr)}
	// The process lives past the request that starts it.
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	proc, err := c.Exec(pctx, ec)
	if err != nil {
		cancel()
		for _, cl := range []io.Closer{stdin, stdout, stderr} {
			if cl != nil {
				cl.Close()
			}
		}
		return fmt.Errorf("start the process in the guest: %w", err)
	}
	p.mu.Lock()
	p.proc, p.pid, p.stdinW = proc, proc.PID, proc.Stdin
	// At exit the FIFOs are closed: the outputs so that containerd's
	// copiers end, stdin so that its copier below does not wait for a
	// writer that never comes.
	for _, cl := range []io.Closer{stdout, stderr, stdin} {
		if cl != nil {
			p.closers = append(p.closers, cl)
		}
	}
	p.mu.Unlock()
	if stdin != nil {
		go func() {
			io.Copy(proc.Stdin, stdin)
			stdin.Close()
			if !p.terminal {
				proc.Stdin.Close()
			}
		}()
	}
	go func() {
		defer cancel()
		var status uint32
		select {
		case <-proc.Done():
			code, err := proc.Wait(context.Background())
			status = uint32(code)
			if err != nil {
				status = vmGoneStatus
			}
		case <-vmGone:
			status = vmGoneStatus
		}
		p.exit(status, onExit)
	}()
	return nil
}

// vmGoneStatus is the exit status of a process whose VM ended under it.
const vmGoneStatus = 255

// exit records the exit once, closes the output FIFOs and tells onExit.
func (p *process) exit(status uint32, onExit func(uint32, time.Time)) {
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		return
	}
	p.exited, p.status, p.exitedAt = true, status, time.Now()
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	if onExit != nil {
		onExit(status, p.exitedAt)
	}
	close(p.done)
}

func orDiscard(w io.WriteCloser) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// signal delivers sig to the process in the guest.
func (p *process) signal(ctx context.Context, sig syscall.Signal) error {
	p.mu.Lock()
	proc, exited := p.proc, p.exited
	p.mu.Unlock()
	if exited {
		return errProcessDone
	}
	if proc == nil {
		return errNotStarted
	}
	return proc.Signal(ctx, sig)
}

var (
	errProcessDone = errors.New("process already finished")
	errNotStarted  = errors.New("process not started")
)

func (p *process) state() (started, exited bool, pid, status uint32, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil, p.exited, p.pid, p.status, p.exitedAt
}

func (p *process) closeStdin() error {
	p.mu.Lock()
	w := p.stdinW
	p.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.Close()
}

func (p *process) resize(ctx context.Context, rows, cols uint16) error {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc == nil {
		return errNotStarted
	}
	return proc.Resize(ctx, rows, cols)
}
