package fakefc

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// level is a log level, ordered from most to least severe.
type level int

const (
	levelOff level = iota
	levelError
	levelWarning
	levelInfo
	levelDebug
	levelTrace
)

var levelNames = map[level]string{
	levelError: "ERROR", levelWarning: "WARN", levelInfo: "INFO", levelDebug: "DEBUG", levelTrace: "TRACE",
}

// parseLevel accepts the level names of the command line and PUT /logger,
// in any case.
func parseLevel(s string) (level, error) {
	switch strings.ToLower(s) {
	case "off":
		return levelOff, nil
	case "error":
		return levelError, nil
	case "warning", "warn":
		return levelWarning, nil
	case "info":
		return levelInfo, nil
	case "debug":
		return levelDebug, nil
	case "trace":
		return levelTrace, nil
	}
	return 0, fmt.Errorf("invalid log level %q", s)
}

// logger writes log lines in the real Firecracker's format:
//
//	2026-01-02T15:04:05.123456789 [id:thread] message
//
// with ":LEVEL" and ":file:line" added inside the brackets when asked.
type logger struct {
	mu         sync.Mutex // guards the fields below
	w          io.Writer
	file       *os.File // owned log file, nil when w is stdout
	id         string
	max        level
	showLevel  bool
	showOrigin bool
}

// logf writes one line from thread at level lvl.
func (l *logger) logf(thread string, lvl level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lvl > l.max || l.w == nil {
		return
	}
	var tag strings.Builder
	tag.WriteString(l.id)
	tag.WriteByte(':')
	tag.WriteString(thread)
	if l.showLevel {
		tag.WriteByte(':')
		tag.WriteString(levelNames[lvl])
	}
	if l.showOrigin {
		if _, file, line, ok := runtime.Caller(2); ok {
			fmt.Fprintf(&tag, ":%s:%d", filepath.Join(filepath.Base(filepath.Dir(file)), filepath.Base(file)), line)
		}
	}
	ts := time.Now().Format("2006-01-02T15:04:05.000000000")
	fmt.Fprintf(l.w, "%s [%s] %s\n", ts, tag.String(), fmt.Sprintf(format, args...))
}

// info logs at level Info.
func (l *logger) info(thread, format string, args ...any) {
	l.logf(thread, levelInfo, format, args...)
}

// warn logs at level Warning.
func (l *logger) warn(thread, format string, args ...any) {
	l.logf(thread, levelWarning, format, args...)
}

// errorf logs at level Error.
func (l *logger) errorf(thread, format string, args ...any) {
	l.logf(thread, levelError, format, args...)
}

// openLogFile opens an existing file or FIFO for appending, as Firecracker
// does: it never creates the file.
func openLogFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
}

// setFile makes l write to f, closing the file it owned before.
func (l *logger) setFile(f *os.File) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		_ = l.file.Close()
	}
	l.file = f
	l.w = f
}
