package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"

	pb "github.com/kindling-vm/kindling/agent/internal/spec/filesystem"
)

// maxPolledEvents bounds the events a polled watcher keeps between two
// GetWatcherEvents calls; later ones are dropped.
const maxPolledEvents = 10000

// dirWatch turns fsnotify events under one directory into envd events.
type dirWatch struct {
	root         string
	recursive    bool
	includeEntry bool
	w            *fsnotify.Watcher
	out          chan *pb.FilesystemEvent // closed when the watch ends
	stop         chan struct{}
	stopOnce     sync.Once
}

// newDirWatch starts watching root (and, if recursive, every directory
// below it, including ones created later).
func newDirWatch(root string, recursive, includeEntry bool) (*dirWatch, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fsError("watch "+root, err)
	}
	if !fi.IsDir() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("watch %s: not a directory", root))
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("watch %s: %w", root, err))
	}
	d := &dirWatch{root: root, recursive: recursive, includeEntry: includeEntry, w: w,
		out: make(chan *pb.FilesystemEvent, 64), stop: make(chan struct{})}
	if err := d.add(root); err != nil {
		_ = w.Close()
		return nil, fsError("watch "+root, err)
	}
	go d.run()
	return d, nil
}

// add watches dir, and below it when recursive.
func (d *dirWatch) add(dir string) error {
	if !d.recursive {
		return d.w.Add(dir)
	}
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil
		}
		if e.IsDir() {
			if err := d.w.Add(p); err != nil && p == dir {
				return err
			}
		}
		return nil
	})
}

func (d *dirWatch) run() {
	defer close(d.out)
	for {
		select {
		case <-d.stop:
			return
		case ev, ok := <-d.w.Events:
			if !ok {
				return
			}
			if d.recursive && ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					_ = d.add(ev.Name)
				}
			}
			for _, fe := range d.convert(ev) {
				select {
				case d.out <- fe:
				case <-d.stop:
					return
				}
			}
		case _, ok := <-d.w.Errors:
			if !ok {
				return
			}
		}
	}
}

// convert maps one fsnotify event (which may combine operations) to envd
// events named relative to the watched directory.
func (d *dirWatch) convert(ev fsnotify.Event) []*pb.FilesystemEvent {
	name, err := filepath.Rel(d.root, ev.Name)
	if err != nil {
		name = ev.Name
	}
	var out []*pb.FilesystemEvent
	for _, m := range []struct {
		op fsnotify.Op
		t  pb.EventType
	}{
		{fsnotify.Create, pb.EventType_EVENT_TYPE_CREATE},
		{fsnotify.Write, pb.EventType_EVENT_TYPE_WRITE},
		{fsnotify.Remove, pb.EventType_EVENT_TYPE_REMOVE},
		{fsnotify.Rename, pb.EventType_EVENT_TYPE_RENAME},
		{fsnotify.Chmod, pb.EventType_EVENT_TYPE_CHMOD},
	} {
		if !ev.Has(m.op) {
			continue
		}
		fe := &pb.FilesystemEvent{Name: name, Type: m.t}
		if d.includeEntry && (m.op == fsnotify.Create || m.op == fsnotify.Write || m.op == fsnotify.Chmod) {
			if e, err := entryInfo(ev.Name); err == nil {
				fe.Entry = e
			}
		}
		out = append(out, fe)
	}
	return out
}

func (d *dirWatch) close() {
	d.stopOnce.Do(func() {
		close(d.stop)
		_ = d.w.Close()
	})
	for range d.out { //nolint:revive // drain until run has returned
	}
}

// WatchDir streams the events under a directory: a start event once the
// watch is in place, then file system events, with keep-alives, until the
// caller hangs up.
func (fsv *filesystemService) WatchDir(ctx context.Context, req *connect.Request[pb.WatchDirRequest], stream *connect.ServerStream[pb.WatchDirResponse]) error {
	p, _, err := fsv.path(req.Header(), req.Msg.GetPath())
	if err != nil {
		return err
	}
	d, err := newDirWatch(p, req.Msg.GetRecursive(), req.Msg.GetIncludeEntry())
	if err != nil {
		return err
	}
	defer d.close()
	if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Start{Start: &pb.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	keepalive := keepaliveInterval(req.Header())
	t := time.NewTicker(keepalive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Keepalive{Keepalive: &pb.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case ev, ok := <-d.out:
			if !ok {
				return connect.NewError(connect.CodeAborted, fmt.Errorf("watch %s ended", p))
			}
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
				return err
			}
			t.Reset(keepalive)
		}
	}
}

// polledWatch is a watcher whose events are fetched with GetWatcherEvents.
type polledWatch struct {
	d      *dirWatch
	mu     sync.Mutex // guards events
	events []*pb.FilesystemEvent
	done   chan struct{}
}

// watcherTable holds the polled watchers by ID.
type watcherTable struct {
	mu   sync.Mutex // guards byID
	byID map[string]*polledWatch
}

func newWatcherTable() *watcherTable { return &watcherTable{byID: map[string]*polledWatch{}} }

func (t *watcherTable) closeAll() {
	t.mu.Lock()
	all := t.byID
	t.byID = map[string]*polledWatch{}
	t.mu.Unlock()
	for _, w := range all {
		w.d.close()
		<-w.done
	}
}

// CreateWatcher starts a polled watcher.
func (fsv *filesystemService) CreateWatcher(_ context.Context, req *connect.Request[pb.CreateWatcherRequest]) (*connect.Response[pb.CreateWatcherResponse], error) {
	p, _, err := fsv.path(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	d, err := newDirWatch(p, req.Msg.GetRecursive(), req.Msg.GetIncludeEntry())
	if err != nil {
		return nil, err
	}
	w := &polledWatch{d: d, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ev := range d.out {
			w.mu.Lock()
			if len(w.events) < maxPolledEvents {
				w.events = append(w.events, ev)
			}
			w.mu.Unlock()
		}
	}()
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	t := fsv.s.watchers
	t.mu.Lock()
	t.byID[id] = w
	t.mu.Unlock()
	return connect.NewResponse(&pb.CreateWatcherResponse{WatcherId: id}), nil
}

func (fsv *filesystemService) watcher(id string, remove bool) (*polledWatch, error) {
	t := fsv.s.watchers
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.byID[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", id))
	}
	if remove {
		delete(t.byID, id)
	}
	return w, nil
}

// GetWatcherEvents returns, and forgets, the events seen since the last call.
func (fsv *filesystemService) GetWatcherEvents(_ context.Context, req *connect.Request[pb.GetWatcherEventsRequest]) (*connect.Response[pb.GetWatcherEventsResponse], error) {
	w, err := fsv.watcher(req.Msg.GetWatcherId(), false)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	evs := w.events
	w.events = nil
	w.mu.Unlock()
	return connect.NewResponse(&pb.GetWatcherEventsResponse{Events: evs}), nil
}

// RemoveWatcher stops a polled watcher.
func (fsv *filesystemService) RemoveWatcher(_ context.Context, req *connect.Request[pb.RemoveWatcherRequest]) (*connect.Response[pb.RemoveWatcherResponse], error) {
	w, err := fsv.watcher(req.Msg.GetWatcherId(), true)
	if err != nil {
		return nil, err
	}
	w.d.close()
	<-w.done
	return connect.NewResponse(&pb.RemoveWatcherResponse{}), nil
}
