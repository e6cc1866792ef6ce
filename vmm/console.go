package vmm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
)

// consoleWatch looks for a marker in the console stream, across chunk
// boundaries, and closes found when it appears (or eof when the stream ends
// first).
type consoleWatch struct {
	marker []byte
	found  chan struct{}
	eof    chan struct{}

	mu   sync.Mutex // guards tail and seen
	tail []byte     // the last len(marker)-1 bytes seen
	seen bool
}

func newConsoleWatch(marker string) *consoleWatch {
	return &consoleWatch{marker: []byte(marker), found: make(chan struct{}), eof: make(chan struct{})}
}

// feed is called by the single console reader with each chunk.
func (w *consoleWatch) feed(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen {
		return
	}
	buf := append(w.tail, p...)
	if bytes.Contains(buf, w.marker) {
		w.seen = true
		w.tail = nil
		close(w.found)
		return
	}
	keep := len(w.marker) - 1
	if len(buf) > keep {
		buf = buf[len(buf)-keep:]
	}
	w.tail = append(w.tail[:0], buf...)
}

// close is called by the console reader at the end of the stream.
func (w *consoleWatch) close() { close(w.eof) }

// openConsole returns where the guest's console goes, and a closer for what
// it opened: ConsolePath opened for appending (created 0600 if missing),
// else the Console writer, else nothing (the console is discarded).
func openConsole(cfg *Config) (io.Writer, func(), error) {
	if cfg.ConsolePath != "" {
		f, err := os.OpenFile(cfg.ConsolePath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("open console file: %w", err)
		}
		return f, func() { f.Close() }, nil
	}
	if cfg.Console != nil {
		return cfg.Console, func() {}, nil
	}
	return nil, func() {}, nil
}

// ConsolePath returns the file the guest's serial console is written to, or
// "" when it goes to a writer or nowhere.
func (m *Machine) ConsolePath() string { return m.cfg.ConsolePath }
