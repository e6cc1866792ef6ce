package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/fsnotify/fsnotify"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/kindling-vm/kindling/internal/store"
)

// consoleLog is a bounded log of a sandbox's serial console: the current file
// grows to limit bytes, then becomes file.1 (replacing the previous one) and a
// new current file starts, so the console never costs more than 2×limit bytes
// on disk however long the guest writes.
type consoleLog struct {
	dir, name string // the log is dir/name, the older part dir/name.1
	path      string
	limit     int64
	// log is told when a rotation fails (writing goes on regardless).
	log *slog.Logger

	mu   sync.Mutex // guards f and size
	f    *os.File
	size int64
}

// defaultConsoleLimit bounds each of the two console files.
const defaultConsoleLimit = 1 << 20

// openConsoleLog opens (or creates) the console log name in the sandbox
// directory dir, never through a symlink. log is told of failed
// rotations; nil discards.
func openConsoleLog(dir, name string, limit int64, log *slog.Logger) (*consoleLog, error) {
	if limit <= 0 {
		limit = defaultConsoleLimit
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := store.OpenInDir("sandbox directory", dir, name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", f.Name())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open console log: %w", err)
	}
	return &consoleLog{dir: dir, name: name, path: filepath.Join(dir, name), limit: limit, log: log, f: f, size: fi.Size()}, nil
}

// Write appends p, rotating first when p would take the file past its limit.
func (c *consoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return 0, os.ErrClosed
	}
	written := 0
	for len(p) > 0 {
		if c.size >= c.limit {
			if err := c.rotate(); err != nil {
				// Losing the guest's output is worse than a log over its
				// bound: say so, and keep appending to the current file
				// (the next rotation is tried after another limit's worth).
				c.log.Error("console log rotation failed; writing on to the current file", "err", err)
				c.size = 0
			}
		}
		chunk := p
		if room := c.limit - c.size; int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		n, err := c.f.Write(chunk)
		written += n
		c.size += int64(n)
		if err != nil {
			return written, fmt.Errorf("write console log: %w", err)
		}
		p = p[n:]
	}
	return written, nil
}

// rotate moves the current file to path.1 and starts an empty one. On
// error the current file stays open (renamed or not), so that writing can
// go on. It is called with mu held.
func (c *consoleLog) rotate() error {
	if err := os.Rename(c.path, c.path+".1"); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	f, err := store.OpenInDir("sandbox directory", c.dir, c.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		// Writing goes on into the file now named .1.
		return fmt.Errorf("rotate console log: %w", err)
	}
	old := c.f
	c.f, c.size = f, 0
	if err := old.Close(); err != nil {
		return fmt.Errorf("rotate console log: close the old file: %w", err)
	}
	return nil
}

// Close closes the current file.
func (c *consoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// LogOptions tune Console and Logs.
type LogOptions struct {
	// Follow keeps the reader going: after what the log holds it returns
	// what is appended, across the log's rotations, until the sandbox's VMM
	// exits or ctx ends; then what is left, and io.EOF.
	Follow bool `json:"follow,omitempty"`
}

// Console returns a reader of what the sandbox's guest wrote on its serial
// console: the bounded console log, oldest part first (very old output may
// have been rotated away). The caller must Close it.
func (r *Runtime) Console(ctx context.Context, id string, o LogOptions) (io.ReadCloser, error) {
	return r.openLog(ctx, id, consoleName, o)
}

// Logs returns a reader of Firecracker's own log of the sandbox (its API
// calls, boot steps and errors; not the guest's console). The caller must
// Close it.
func (r *Runtime) Logs(ctx context.Context, id string, o LogOptions) (io.ReadCloser, error) {
	return r.openLog(ctx, id, fcLogName, o)
}

func (r *Runtime) openLog(ctx context.Context, id, name string, o LogOptions) (io.ReadCloser, error) {
	var rec record
	if err := r.st.Load(id, &rec); err != nil {
		return nil, r.loadError(id, err)
	}
	dir, err := r.st.Dir(id)
	if err != nil {
		return nil, r.loadError(id, err)
	}
	path := filepath.Join(dir, name)
	if name == fcLogName && rec.Machine != nil && rec.Machine.LogPath != "" && rec.Status != Exited && rec.Status != Created {
		// A jailed VMM writes its log inside its jail while it runs; the
		// driver copies it here when the VMM ends.
		if _, err := os.Stat(rec.Machine.LogPath); err == nil {
			path = rec.Machine.LogPath
		}
	}
	if !o.Follow {
		return openBoundedLog(path)
	}
	pr, pw := io.Pipe()
	exited := make(chan struct{})
	waitCtx, cancelWait := context.WithCancel(ctx)
	go func() {
		r.Wait(waitCtx, id) // ends when the sandbox exits or ctx ends
		close(exited)
	}()
	closed, closeFollow := context.WithCancel(context.Background())
	go func() {
		err := followLog(closed, path, pw, exited)
		cancelWait()
		<-exited
		pw.CloseWithError(err) // nil: io.EOF
	}()
	return &followReader{PipeReader: pr, stop: closeFollow}, nil
}

// followReader is the reader of a followed log; Close ends the follow.
type followReader struct {
	*io.PipeReader
	stop context.CancelFunc
}

func (f *followReader) Close() error {
	f.stop()
	return f.PipeReader.Close()
}

// openBoundedLog opens the bounded log at path for reading, oldest part
// first: path.1 (the part rotated out), then path. Missing parts are
// skipped.
func openBoundedLog(path string) (io.ReadCloser, error) {
	var files multiFile
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			files.Close()
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		files = append(files, f)
	}
	return files.reader(), nil
}

// multiFile reads its files one after the other.
type multiFile []*os.File

func (m multiFile) reader() io.ReadCloser {
	rs := make([]io.Reader, len(m))
	for i, f := range m {
		rs[i] = f
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(rs...), m}
}

func (m multiFile) Close() error {
	var errs []error
	for _, f := range m {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// copyLog copies the bounded log at path to w, oldest part first.
func copyLog(path string, w io.Writer) error {
	rc, err := openBoundedLog(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// followLog copies the bounded log at path to w like copyLog, then keeps
// copying what is appended to it, across rotations (path renamed to path.1
// and a new path started), until done is closed — then it copies what is
// left and returns — or ctx ends. A log that does not exist yet is waited
// for; one removed meanwhile is read to its end through the open file.
//
// It sleeps until inotify reports a change in the log's directory (a write,
// a create, a rename), so a quiet log costs no CPU.
func followLog(ctx context.Context, path string, w io.Writer, done <-chan struct{}) error {
	// Watch before the first read, so that nothing written in between is
	// missed.
	watch, err := fsnotify.NewBufferedWatcher(64)
	if err != nil {
		return fmt.Errorf("follow %s: %w", path, err)
	}
	defer watch.Close()
	if err := watch.Add(filepath.Dir(path)); err != nil {
		return fmt.Errorf("follow %s: %w", path, err)
	}
	if err := copyFile(path+".1", w); err != nil {
		return err
	}
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	last := false
	for {
		if f == nil {
			nf, err := os.Open(path)
			switch {
			case err == nil:
				f = nf
			case !errors.Is(err, fs.ErrNotExist):
				return fmt.Errorf("follow %s: %w", path, err)
			}
		}
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return fmt.Errorf("follow %s: %w", path, err)
			}
			if replaced(f, path) {
				// Rotated (or removed): finish the old file, then go on
				// with the new one at once.
				if _, err := io.Copy(w, f); err != nil {
					return fmt.Errorf("follow %s: %w", path, err)
				}
				f.Close()
				f = nil
				if _, err := os.Stat(path); err == nil {
					continue
				}
			}
		}
		if last {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			last = true
		case err, ok := <-watch.Errors:
			if ok && errors.Is(err, fsnotify.ErrEventOverflow) {
				continue // events were lost: read again
			}
			if ok {
				return fmt.Errorf("follow %s: %w", path, err)
			}
		case _, ok := <-watch.Events:
			// Any change in the directory: read again (the log, or the
			// file that replaced it).
			if !ok {
				return fmt.Errorf("follow %s: watch ended", path)
			}
		}
	}
}

func copyFile(path string, w io.Writer) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// replaced reports whether path no longer names the open file f.
func replaced(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	pi, err := os.Stat(path)
	if err != nil {
		return true
	}
	return !os.SameFile(fi, pi)
}
