package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/agent/internal/spec/filesystem"
)

// FileType is the type of a file in the guest.
type FileType int

// File types.
const (
	TypeUnknown FileType = iota
	TypeFile
	TypeDir
	TypeSymlink
)

func (t FileType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "directory"
	case TypeSymlink:
		return "symlink"
	}
	return "unknown"
}

// FileInfo describes a file in the guest.
type FileInfo struct {
	Name    string
	Path    string // absolute, in the guest
	Type    FileType
	Size    int64
	Mode    fs.FileMode // permission bits
	Owner   string
	Group   string
	ModTime time.Time
	// Target is a symbolic link's target.
	Target string
}

func fileInfo(e *pb.EntryInfo) FileInfo {
	fi := FileInfo{Name: e.GetName(), Path: e.GetPath(), Size: e.GetSize(), Mode: fs.FileMode(e.GetMode()).Perm(),
		Owner: e.GetOwner(), Group: e.GetGroup(), Target: e.GetSymlinkTarget()}
	if e.GetModifiedTime() != nil {
		fi.ModTime = e.GetModifiedTime().AsTime()
	}
	switch e.GetType() {
	case pb.FileType_FILE_TYPE_FILE:
		fi.Type = TypeFile
	case pb.FileType_FILE_TYPE_DIRECTORY:
		fi.Type = TypeDir
	case pb.FileType_FILE_TYPE_SYMLINK:
		fi.Type = TypeSymlink
	}
	return fi
}

// FileOptions are the options of file operations.
type FileOptions struct {
	// User is the guest user the operation runs as: it owns created files,
	// and relative paths are relative to its home. Empty means the default.
	User string
}

func fileURL(path string, o FileOptions) string {
	q := url.Values{"path": {path}}
	if o.User != "" {
		q.Set("username", o.User)
	}
	return baseURL + "/files?" + q.Encode()
}

// PutFile writes r to path in the guest, replacing any file there and
// creating missing parent directories. r is streamed.
func (c *Client) PutFile(ctx context.Context, path string, r io.Reader, o FileOptions) error {
	req, err := http.NewRequest(http.MethodPost, fileURL(path, o), io.NopCloser(r))
	if err != nil {
		return fmt.Errorf("agent put %q: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := c.do(ctx, fmt.Sprintf("put %q", path), req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var written []struct {
		Path string `json:"path"`
	}
	if err := json.NewDecoder(res.Body).Decode(&written); err != nil || len(written) != 1 {
		return fmt.Errorf("agent put %q: unexpected answer: %w", path, &RemoteError{Code: "200", Message: "no file listed"})
	}
	return nil
}

// GetFile opens path in the guest for reading. The caller closes the
// reader; cancelling ctx ends the transfer.
func (c *Client) GetFile(ctx context.Context, path string, o FileOptions) (io.ReadCloser, error) {
	req, err := http.NewRequest(http.MethodGet, fileURL(path, o), nil)
	if err != nil {
		return nil, fmt.Errorf("agent get %q: %w", path, err)
	}
	res, err := c.do(ctx, fmt.Sprintf("get %q", path), req)
	if err != nil {
		return nil, err
	}
	return &fileReader{rc: res.Body, c: c, path: path, ctx: ctx}, nil
}

// fileReader reports a transfer broken by the agent as ErrUnavailable.
type fileReader struct {
	rc   io.ReadCloser
	c    *Client
	path string
	ctx  context.Context
}

func (r *fileReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	if err != nil && err != io.EOF {
		if r.ctx.Err() != nil {
			return n, fmt.Errorf("agent get %q: %w", r.path, context.Cause(r.ctx))
		}
		return n, fmt.Errorf("agent get %q: %w", r.path, &UnavailableError{Socket: r.c.socket, Err: err})
	}
	return n, err
}

func (r *fileReader) Close() error { return r.rc.Close() }

// userRequest makes a Connect request carrying the user.
func userRequest[T any](msg *T, user string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	setUser(req.Header(), user)
	return req
}

// Stat describes path (a symbolic link itself, not its target).
func (c *Client) Stat(ctx context.Context, path string, o FileOptions) (FileInfo, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	res, err := c.fs.Stat(ctx, userRequest(&pb.StatRequest{Path: path}, o.User))
	if err != nil {
		return FileInfo{}, c.wrap(ctx, fmt.Sprintf("stat %q", path), err)
	}
	return fileInfo(res.Msg.GetEntry()), nil
}

// List lists directory dir down to depth levels (0 or 1: its entries only).
func (c *Client) List(ctx context.Context, dir string, depth int, o FileOptions) ([]FileInfo, error) {
	if depth < 0 {
		return nil, fmt.Errorf("agent list %q: negative depth: %w", dir, ErrInvalid)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	res, err := c.fs.ListDir(ctx, userRequest(&pb.ListDirRequest{Path: dir, Depth: uint32(depth)}, o.User))
	if err != nil {
		return nil, c.wrap(ctx, fmt.Sprintf("list %q", dir), err)
	}
	out := make([]FileInfo, 0, len(res.Msg.GetEntries()))
	for _, e := range res.Msg.GetEntries() {
		out = append(out, fileInfo(e))
	}
	return out, nil
}

// MakeDir creates dir and its missing parents; an existing directory gives
// an error matching ErrExists.
func (c *Client) MakeDir(ctx context.Context, dir string, o FileOptions) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	_, err := c.fs.MakeDir(ctx, userRequest(&pb.MakeDirRequest{Path: dir}, o.User))
	return c.wrap(ctx, fmt.Sprintf("mkdir %q", dir), err)
}

// Remove removes path, a directory with all it holds.
func (c *Client) Remove(ctx context.Context, path string, o FileOptions) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	_, err := c.fs.Remove(ctx, userRequest(&pb.RemoveRequest{Path: path}, o.User))
	return c.wrap(ctx, fmt.Sprintf("remove %q", path), err)
}

// Move renames src to dst, creating dst's missing parents.
func (c *Client) Move(ctx context.Context, src, dst string, o FileOptions) (FileInfo, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	res, err := c.fs.Move(ctx, userRequest(&pb.MoveRequest{Source: src, Destination: dst}, o.User))
	if err != nil {
		return FileInfo{}, c.wrap(ctx, fmt.Sprintf("move %q to %q", src, dst), err)
	}
	return fileInfo(res.Msg.GetEntry()), nil
}

// EventType is what happened to a watched file.
type EventType int

// Event types.
const (
	EventUnknown EventType = iota
	EventCreate
	EventWrite
	EventRemove
	EventRename
	EventChmod
)

func (t EventType) String() string {
	if t < EventUnknown || t > EventChmod {
		t = EventUnknown
	}
	return [...]string{"unknown", "create", "write", "remove", "rename", "chmod"}[t]
}

// WatchEvent is one change under a watched directory.
type WatchEvent struct {
	Name string // relative to the watched directory
	Type EventType
}

// Watcher delivers the events under a directory.
type Watcher struct {
	events chan WatchEvent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Events delivers the events; it is closed when the watch ends.
func (w *Watcher) Events() <-chan WatchEvent { return w.events }

// Err says why the watch ended (nil after Close).
func (w *Watcher) Err() error {
	<-w.done
	return w.err
}

// Close ends the watch.
func (w *Watcher) Close() {
	w.cancel()
	<-w.done
}

// Watch watches dir (and below it, if recursive). It returns once the
// watch is in place in the guest; cancelling ctx or Close ends it.
func (c *Client) Watch(ctx context.Context, dir string, recursive bool, o FileOptions) (*Watcher, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.fs.WatchDir(sctx, userRequest(&pb.WatchDirRequest{Path: dir, Recursive: recursive}, o.User))
	if err != nil {
		cancel()
		return nil, c.wrap(ctx, fmt.Sprintf("watch %q", dir), err)
	}
	if !stream.Receive() {
		err := stream.Err()
		_ = stream.Close()
		cancel()
		if err == nil {
			err = &UnavailableError{Socket: c.socket, Err: fmt.Errorf("watch stream ended before its start")}
		}
		return nil, c.wrap(ctx, fmt.Sprintf("watch %q", dir), err)
	}
	w := &Watcher{events: make(chan WatchEvent, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.events)
		defer stream.Close()
		for stream.Receive() {
			fe := stream.Msg().GetFilesystem()
			if fe == nil {
				continue
			}
			select {
			case w.events <- WatchEvent{Name: fe.GetName(), Type: EventType(fe.GetType())}:
			case <-sctx.Done():
				return
			}
		}
		if sctx.Err() == nil {
			w.err = c.wrap(sctx, fmt.Sprintf("watch %q", dir), stream.Err())
		}
	}()
	return w, nil
}
