package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/kindling-vm/kindling/agent"
)

// Guest is the optional capability of a Controller to run processes in a
// sandbox's guest and to move files in and out of it, through the guest
// agent (kindling-agent) over the sandbox's vsock device. *Runtime
// implements it. Its arguments and results are plain data and streams, so
// that a server can serve it for a remote client.
//
// A sandbox without a vsock device, or whose guest has no agent answering
// on vsock port 49983, makes every call fail at once with an error that
// says so (matching ErrNotSupported or ErrUnavailable); a paused or
// stopped sandbox gives ErrInvalidState. Errors of the guest side match
// ErrNotFound (a missing file or program), ErrExists, ErrInvalid,
// agent.ErrAccessDenied, and ErrUnavailable, naming the sandbox and the
// socket, when the agent does not answer in time or goes away mid-call.
type Guest interface {
	// Exec starts a process in the guest. Cancelling ctx before it ends
	// kills it. A program that is missing or cannot be executed gives an
	// error wrapping *agent.ExecError (ExitCode 127 or 126).
	Exec(ctx context.Context, id string, req ExecRequest) (Process, error)
	// PutFile writes r to path in the guest, creating parent directories.
	PutFile(ctx context.Context, id, path string, r io.Reader, o FileOptions) error
	// GetFile reads path in the guest; the caller closes the reader.
	GetFile(ctx context.Context, id, path string, o FileOptions) (io.ReadCloser, error)
	// StatFile describes path (a symbolic link itself).
	StatFile(ctx context.Context, id, path string, o FileOptions) (FileInfo, error)
	// ListDir lists dir: depth 1 its entries, N that many levels.
	ListDir(ctx context.Context, id, dir string, depth int, o FileOptions) ([]FileInfo, error)
	// MakeDir creates dir and its parents; an existing one matches ErrExists.
	MakeDir(ctx context.Context, id, dir string, o FileOptions) error
	// Chmod sets path's permission bits.
	Chmod(ctx context.Context, id, path string, mode fs.FileMode, o FileOptions) error
	// RemoveFile removes path, recursively.
	RemoveFile(ctx context.Context, id, path string, o FileOptions) error
	// WatchDir reports changes under dir until ctx ends or the watcher
	// is closed.
	WatchDir(ctx context.Context, id, dir string, recursive bool, o FileOptions) (Watcher, error)
}

var _ Guest = (*Runtime)(nil)

// ExecRequest describes a process to run in a guest.
type ExecRequest struct {
	// Args is the program and its arguments; Args[0] is looked up in the
	// guest's PATH unless it holds a slash.
	Args []string `json:"args"`
	// Env adds KEY=VALUE entries to the guest's default environment.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory ("" for the default).
	Dir string `json:"dir,omitempty"`
	// User runs the process as this guest user ("" for the default).
	User string `json:"user,omitempty"`
	// TTY runs the process on a terminal of Rows×Cols (0: 24×80); all its
	// output is then Stdout.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Stdin gives the process an input stream (Process.Stdin); without
	// it, it reads /dev/null.
	Stdin bool `json:"stdin,omitempty"`
	// Stdout and Stderr receive the output; when nil it is read from
	// Process.Stdout and Process.Stderr, which must then be drained.
	Stdout io.Writer `json:"-"`
	Stderr io.Writer `json:"-"`
}

// Process is a process running in a guest.
type Process interface {
	// PID is its process ID in the guest.
	PID() uint32
	// Stdin is its input (nil without ExecRequest.Stdin or TTY); closing
	// it is the end of input.
	Stdin() io.WriteCloser
	// Stdout and Stderr are its output when ExecRequest named no writers.
	Stdout() io.ReadCloser
	Stderr() io.ReadCloser
	// Wait waits for the end and returns the exit code (128+N for signal
	// N). An error means the end is unknown (the agent went away) or the
	// Exec context was cancelled (the process was killed).
	Wait(ctx context.Context) (int, error)
	// Signal sends a signal to the process.
	Signal(ctx context.Context, sig syscall.Signal) error
	// Resize sets the size of its terminal.
	Resize(ctx context.Context, rows, cols uint16) error
	// Close releases the handle, killing the process if it still runs.
	Close() error
}

// FileOptions are the options of the file calls of Guest.
type FileOptions struct {
	// User is the guest user the call acts as ("" for the default): it
	// owns what is created; relative paths start at its home.
	User string `json:"user,omitempty"`
}

// FileInfo describes a file in a guest.
type FileInfo = agent.FileInfo

// FileType is the type of a file in a guest (agent.TypeFile, ...).
type FileType = agent.FileType

// File types of FileInfo.Type.
const (
	TypeFile    = agent.TypeFile
	TypeDir     = agent.TypeDir
	TypeSymlink = agent.TypeSymlink
)

// FileEvent is a change under a watched directory.
type FileEvent = agent.WatchEvent

// Watcher delivers the changes under a watched directory.
type Watcher interface {
	// Events is closed when the watch ends.
	Events() <-chan FileEvent
	// Err says why it ended (nil after Close).
	Err() error
	// Close ends the watch.
	Close()
}

// guestClient returns a client of the agent of sandbox id, which must run
// and have a vsock device. The caller closes it when its call is done
// (Close drops the client's connections; the client is kept for reuse).
func (r *Runtime) guestClient(ctx context.Context, id, op string) (*agent.Client, error) {
	g, err := r.guests.get(r, id)
	if err != nil {
		return nil, err // it names the sandbox
	}
	rec := g.rec
	switch st := r.reconcile(ctx, &rec); st {
	case Running, Orphaned:
	case Paused:
		return nil, fmt.Errorf("%s in sandbox %q: it is paused: resume it first: %w", op, id, ErrInvalidState)
	default:
		return nil, fmt.Errorf("%s in sandbox %q: it is %s: %w", op, id, st, ErrInvalidState)
	}
	if rec.Spec.VsockCID == 0 {
		return nil, fmt.Errorf("%s in sandbox %q: it has no vsock device, so no guest agent can be reached: the guest has no kindling-agent (give the sandbox an agent: --agent and a root filesystem that holds it): %w", op, id, ErrNotSupported)
	}
	return g.client, nil
}

// guestCache keeps, per sandbox, its record and an agent client, for as
// long as the sandbox's state file (replaced whole on every save, so its
// inode, size and time tell a change) and its token are unchanged, so
// that a call to the guest costs a stat, a small read and a reconcile,
// not a state load and a new client. The zero value is ready.
type guestCache struct {
	mu sync.Mutex // guards m
	m  map[string]*guestEntry
}

type guestEntry struct {
	stamp  fileStamp
	rec    record
	client *agent.Client
	token  string // the token the client sends
}

// fileStamp tells one version of a file from another.
type fileStamp struct {
	ino, size uint64
	mtime     int64
}

// stateFileName is the store's state file in a sandbox directory.
const stateFileName = "state.json"

func stampOf(path string) (fileStamp, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileStamp{}, err
	}
	return fileStamp{ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim.Nano()}, nil
}

// get returns the entry of sandbox id, loading it when its state file
// changed since. Its errors name the sandbox.
func (c *guestCache) get(r *Runtime, id string) (*guestEntry, error) {
	dir, err := r.st.Dir(id)
	if err != nil {
		return nil, r.loadError(id, err)
	}
	stamp, serr := stampOf(filepath.Join(dir, stateFileName))
	tok, err := readSecret(dir, tokenName)
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: %w", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.m[id]; g != nil && serr == nil && g.stamp == stamp && g.token == tok {
		return g, nil
	}
	if g := c.m[id]; g != nil {
		g.client.Close()
		delete(c.m, id)
	}
	var rec record
	if err := r.st.Load(id, &rec); err != nil {
		return nil, r.loadError(id, err)
	}
	client, err := agent.New(agent.Config{VsockPath: vsockPath(&rec, dir), AccessToken: tok,
		DialTimeout: r.agentTimeout, RequestTimeout: r.agentTimeout})
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: %w", id, err)
	}
	g := &guestEntry{stamp: stamp, rec: rec, client: client, token: tok}
	if serr == nil {
		if c.m == nil {
			c.m = map[string]*guestEntry{}
		}
		c.m[id] = g
	}
	return g, nil
}

// guestError names the sandbox in an error of its agent, and says what a
// vsock connection closed at once means: nothing listens on the port.
func guestError(op, id string, err error) error {
	if err == nil {
		return nil
	}
	var ue *agent.UnavailableError
	if errors.As(err, &ue) && errors.Is(err, errNothingListens) {
		return fmt.Errorf("%s in sandbox %q: nothing answers on vsock port %d (%s): the guest has no kindling-agent, or it has not started: %w", op, id, agent.Port, ue.Socket, err)
	}
	return fmt.Errorf("%s in sandbox %q: %w", op, id, err)
}

// errNothingListens matches the agent client's error for a vsock
// connection that Firecracker closed during the handshake.
var errNothingListens = agent.ErrNoListener

// Exec starts a process in sandbox id's guest (see Guest).
func (r *Runtime) Exec(ctx context.Context, id string, req ExecRequest) (Process, error) {
	c, err := r.guestClient(ctx, id, "exec")
	if err != nil {
		return nil, err
	}
	p, err := c.Exec(ctx, agent.ExecConfig{
		Args: req.Args, Env: req.Env, Dir: req.Dir, User: req.User,
		TTY: req.TTY, Rows: req.Rows, Cols: req.Cols, Stdin: req.Stdin,
		Stdout: req.Stdout, Stderr: req.Stderr,
	})
	if err != nil {
		c.Close()
		return nil, guestError("exec", id, err)
	}
	return &guestProcess{p: p, c: c, id: id}, nil
}

// Spawn starts a process in sandbox id's guest that runs on after the
// call, detached: its output goes to the guest's console, which is the
// sandbox's console log ('kindling logs', Runtime.Console), and its input
// is /dev/null. It returns the process's PID in the guest once it has
// started. req must not ask for a terminal, stdin or output writers
// (ErrInvalid). Errors are Exec's; a guest whose agent cannot send output
// to the console (one older than this kindling) matches ErrNotSupported.
func (r *Runtime) Spawn(ctx context.Context, id string, req ExecRequest) (uint32, error) {
	c, err := r.guestClient(ctx, id, "spawn")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	pid, err := c.Spawn(ctx, agent.ExecConfig{
		Args: req.Args, Env: req.Env, Dir: req.Dir, User: req.User,
		TTY: req.TTY, Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr,
	})
	return pid, guestError("spawn", id, err)
}

// guestProcess is a Process of the runtime: an agent process and the
// client that started it, closed with it.
type guestProcess struct {
	p  *agent.Process
	c  *agent.Client
	id string
}

func (g *guestProcess) PID() uint32 { return g.p.PID }

func (g *guestProcess) Stdin() io.WriteCloser {
	if g.p.Stdin == nil {
		return nil
	}
	return g.p.Stdin
}

func (g *guestProcess) Stdout() io.ReadCloser {
	if g.p.Stdout == nil {
		return nil
	}
	return g.p.Stdout
}

func (g *guestProcess) Stderr() io.ReadCloser {
	if g.p.Stderr == nil {
		return nil
	}
	return g.p.Stderr
}

func (g *guestProcess) Wait(ctx context.Context) (int, error) {
	code, err := g.p.Wait(ctx)
	return code, guestError("exec", g.id, err)
}

func (g *guestProcess) Signal(ctx context.Context, sig syscall.Signal) error {
	return guestError("signal", g.id, g.p.Signal(ctx, sig))
}

func (g *guestProcess) Resize(ctx context.Context, rows, cols uint16) error {
	return guestError("resize", g.id, g.p.Resize(ctx, rows, cols))
}

func (g *guestProcess) Close() error {
	err := g.p.Close()
	g.c.Close()
	return err
}

// PutFile writes r to path in sandbox id's guest.
func (r *Runtime) PutFile(ctx context.Context, id, path string, rd io.Reader, o FileOptions) error {
	c, err := r.guestClient(ctx, id, "put file")
	if err != nil {
		return err
	}
	defer c.Close()
	return guestError("put file", id, c.PutFile(ctx, path, rd, agent.FileOptions{User: o.User}))
}

// GetFile reads path in sandbox id's guest.
func (r *Runtime) GetFile(ctx context.Context, id, path string, o FileOptions) (io.ReadCloser, error) {
	c, err := r.guestClient(ctx, id, "get file")
	if err != nil {
		return nil, err
	}
	rc, err := c.GetFile(ctx, path, agent.FileOptions{User: o.User})
	if err != nil {
		c.Close()
		return nil, guestError("get file", id, err)
	}
	return &clientReader{ReadCloser: rc, c: c}, nil
}

// clientReader closes its client with the reader.
type clientReader struct {
	io.ReadCloser
	c *agent.Client
}

func (r *clientReader) Close() error {
	err := r.ReadCloser.Close()
	r.c.Close()
	return err
}

// StatFile describes path in sandbox id's guest.
func (r *Runtime) StatFile(ctx context.Context, id, path string, o FileOptions) (FileInfo, error) {
	c, err := r.guestClient(ctx, id, "stat")
	if err != nil {
		return FileInfo{}, err
	}
	defer c.Close()
	fi, err := c.Stat(ctx, path, agent.FileOptions{User: o.User})
	return fi, guestError("stat", id, err)
}

// ListDir lists dir in sandbox id's guest.
func (r *Runtime) ListDir(ctx context.Context, id, dir string, depth int, o FileOptions) ([]FileInfo, error) {
	c, err := r.guestClient(ctx, id, "list")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	fis, err := c.List(ctx, dir, depth, agent.FileOptions{User: o.User})
	return fis, guestError("list", id, err)
}

// MakeDir creates dir in sandbox id's guest.
func (r *Runtime) MakeDir(ctx context.Context, id, dir string, o FileOptions) error {
	c, err := r.guestClient(ctx, id, "make directory")
	if err != nil {
		return err
	}
	defer c.Close()
	return guestError("make directory", id, c.MakeDir(ctx, dir, agent.FileOptions{User: o.User}))
}

// Chmod sets the mode of path in sandbox id's guest.
func (r *Runtime) Chmod(ctx context.Context, id, path string, mode fs.FileMode, o FileOptions) error {
	c, err := r.guestClient(ctx, id, "chmod")
	if err != nil {
		return err
	}
	defer c.Close()
	return guestError("chmod", id, c.Chmod(ctx, path, mode, agent.FileOptions{User: o.User}))
}

// RemoveFile removes path in sandbox id's guest.
func (r *Runtime) RemoveFile(ctx context.Context, id, path string, o FileOptions) error {
	c, err := r.guestClient(ctx, id, "remove")
	if err != nil {
		return err
	}
	defer c.Close()
	return guestError("remove", id, c.Remove(ctx, path, agent.FileOptions{User: o.User}))
}

// WatchDir watches dir in sandbox id's guest.
func (r *Runtime) WatchDir(ctx context.Context, id, dir string, recursive bool, o FileOptions) (Watcher, error) {
	c, err := r.guestClient(ctx, id, "watch")
	if err != nil {
		return nil, err
	}
	w, err := c.Watch(ctx, dir, recursive, agent.FileOptions{User: o.User})
	if err != nil {
		c.Close()
		return nil, guestError("watch", id, err)
	}
	return &clientWatcher{Watcher: w, c: c}, nil
}

// clientWatcher closes its client with the watch.
type clientWatcher struct {
	*agent.Watcher
	c *agent.Client
}

func (w *clientWatcher) Close() {
	w.Watcher.Close()
	w.c.Close()
}
