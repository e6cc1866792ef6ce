package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// consoleLog is a bounded log of a sandbox's serial console: the current file
// grows to limit bytes, then becomes file.1 (replacing the previous one) and a
// new current file starts, so the console never costs more than 2×limit bytes
// on disk however long the guest writes.
type consoleLog struct {
	path  string
	limit int64

	mu   sync.Mutex // guards f and size
	f    *os.File
	size int64
}

// defaultConsoleLimit bounds each of the two console files.
const defaultConsoleLimit = 1 << 20

func openConsoleLog(path string, limit int64) (*consoleLog, error) {
	if limit <= 0 {
		limit = defaultConsoleLimit
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open console log: %w", err)
	}
	return &consoleLog{path: path, limit: limit, f: f, size: fi.Size()}, nil
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
				return written, err
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

// rotate moves the current file to path.1 and starts an empty one.
// It is called with mu held.
func (c *consoleLog) rotate() error {
	if err := c.f.Close(); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	c.f = nil
	if err := os.Rename(c.path, c.path+".1"); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	c.f, c.size = f, 0
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

// readConsole copies what the console log holds, oldest first, to w.
func readConsole(path string, w io.Writer) error {
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read console: %w", err)
		}
		_, err = io.Copy(w, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read console: %w", err)
		}
	}
	return nil
}
