package monitor

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/kindling-vm/kindling/internal/store"
)

// ConsoleLog is a bounded log of a sandbox's serial console: the current file
// grows to limit bytes, then becomes file.1 (replacing the previous one) and a
// new current file starts, so the console never costs more than 2×limit bytes
// on disk however long the guest writes.
type ConsoleLog struct {
	dir, name string // the log is dir/name, the older part dir/name.1
	path      string
	limit     int64
	// log is told when a rotation fails (writing goes on regardless).
	log *slog.Logger

	mu   sync.Mutex // guards f and size
	f    *os.File
	size int64
}

// DefaultConsoleLimit bounds each of the two console files.
const DefaultConsoleLimit = 1 << 20

// OpenConsoleLog opens (or creates) the console log name in the sandbox
// directory dir, never through a symlink. log is told of failed
// rotations; nil discards.
func OpenConsoleLog(dir, name string, limit int64, log *slog.Logger) (*ConsoleLog, error) {
	if limit <= 0 {
		limit = DefaultConsoleLimit
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
	return &ConsoleLog{dir: dir, name: name, path: filepath.Join(dir, name), limit: limit, log: log, f: f, size: fi.Size()}, nil
}

// Write appends p, rotating first when p would take the file past its limit.
func (c *ConsoleLog) Write(p []byte) (int, error) {
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
func (c *ConsoleLog) rotate() error {
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
func (c *ConsoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}
