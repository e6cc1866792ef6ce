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

	"github.com/kindling-vm/kindling/internal/monitor"
)

// consoleLog is the monitor's bounded console log (see monitor.ConsoleLog).
type consoleLog = monitor.ConsoleLog

// openConsoleLog opens the console log name in dir (see
// monitor.OpenConsoleLog).
func openConsoleLog(dir, name string, limit int64, log *slog.Logger) (*consoleLog, error) {
	return monitor.OpenConsoleLog(dir, name, limit, log)
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
