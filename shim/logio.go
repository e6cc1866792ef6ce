package shim

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// containerd's clients (ctr run --log-uri, and any client using
// cio.LogURI) may give a task's stdout and stderr as a URI instead of
// FIFOs: file:///PATH appends both to a file, binary:///PATH?ARGS runs a
// logging program that reads them. The CRI plugin always uses FIFOs.

// logURI is a parsed log URI.
type logURI struct {
	scheme string // "file" or "binary"
	path   string // absolute
	args   []string
}

// parseLogURI parses s when it is a log URI (it has a scheme); ok is false
// for a FIFO path.
func parseLogURI(s string) (u logURI, ok bool, err error) {
	p, err := url.Parse(s)
	if err != nil || p.Scheme == "" {
		return logURI{}, false, nil // a FIFO path, not a URI
	}
	u = logURI{scheme: p.Scheme, path: p.Path}
	switch p.Scheme {
	case "file", "binary":
	default:
		return u, true, fmt.Errorf("stdio %q: unknown scheme %q: want a FIFO path, file:///PATH or binary:///PATH", s, p.Scheme)
	}
	if p.Host != "" || !filepath.IsAbs(p.Path) {
		return u, true, fmt.Errorf("stdio %q: want an absolute path (%s:///PATH)", s, p.Scheme)
	}
	if p.Scheme == "binary" {
		// The query's keys and values are the program's arguments, in
		// the order of the keys (a query has none of its own).
		q := p.Query()
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			u.args = append(u.args, k)
			for _, v := range q[k] {
				if v != "" {
					u.args = append(u.args, v)
				}
			}
		}
	}
	return u, true, nil
}

// openLogURI opens u for a process's output: stdout, and stderr unless
// terminal (a terminal has one stream). env is the logging program's
// environment (CONTAINER_ID, CONTAINER_NAMESPACE).
func openLogURI(u logURI, terminal bool, env []string) (stdout, stderr io.WriteCloser, err error) {
	if u.scheme == "file" {
		return openLogFile(u.path, terminal)
	}
	return startLogBinary(u, terminal, env)
}

// openLogFile opens path for appending, once per stream.
func openLogFile(path string, terminal bool) (stdout, stderr io.WriteCloser, err error) {
	open := func() (*os.File, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open the log file: %w", err)
		}
		return f, nil
	}
	out, err := open()
	if err != nil {
		return nil, nil, err
	}
	if terminal {
		return out, nil, nil
	}
	errf, err := open()
	if err != nil {
		out.Close()
		return nil, nil, err
	}
	return out, errf, nil
}

// logBinaryWait bounds how long a process's exit waits for its logging
// program to finish once the output has ended; then it is killed.
const logBinaryWait = 10 * time.Second

// logBinaryReady bounds the wait for a logging program's readiness.
const logBinaryReady = 10 * time.Second

// startLogBinary runs the logging program as containerd's shims do: the
// process's stdout is its fd 3 and stderr its fd 4 (pipes it reads), and
// it closes fd 5 when it is ready. Closing the returned stdout ends the
// output and waits for the program to exit (at most logBinaryWait).
func startLogBinary(u logURI, terminal bool, env []string) (stdout, stderr io.WriteCloser, err error) {
	var files []*os.File // the program's ends, closed here once it runs
	var ours []*os.File  // the shim's ends
	fail := func(err error) (io.WriteCloser, io.WriteCloser, error) {
		for _, f := range append(files, ours...) {
			f.Close()
		}
		return nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	files, ours = append(files, outR), append(ours, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	files, ours = append(files, errR), append(ours, errW)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	files, ours = append(files, readyW), append(ours, readyR)
	cmd := exec.Command(u.path, u.args...)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	// Its own process group: a signal to the shim's is not for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start the logging program: %w", err))
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	ready := make(chan error, 1)
	go func() {
		_, err := readyR.Read(make([]byte, 1))
		ready <- err
	}()
	lb := &logBinary{cmd: cmd, waited: waited, stdoutW: outW, stderrW: errW}
	select {
	case err := <-ready:
		readyR.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			lb.Close()
			return nil, nil, fmt.Errorf("the logging program %s: %w", u.path, err)
		}
	case err := <-waited:
		readyR.Close()
		waited <- err
		lb.Close()
		return nil, nil, fmt.Errorf("the logging program %s exited before it was ready: %v", u.path, err)
	case <-time.After(logBinaryReady):
		readyR.Close()
		lb.Close()
		return nil, nil, fmt.Errorf("the logging program %s did not close fd 5 (ready) within %v", u.path, logBinaryReady)
	}
	if terminal {
		errW.Close()
		lb.stderrW = nil
		return lb, nil, nil
	}
	return lb, errW, nil
}

// logBinary is a running logging program; as a writer, its stdout.
type logBinary struct {
	cmd              *exec.Cmd
	waited           chan error
	stdoutW, stderrW *os.File
}

func (l *logBinary) Write(b []byte) (int, error) { return l.stdoutW.Write(b) }

// Close ends both streams (closing stderr's pipe again later does no
// harm) and waits for the program to exit.
func (l *logBinary) Close() error {
	l.stdoutW.Close()
	if l.stderrW != nil {
		l.stderrW.Close()
	}
	select {
	case err := <-l.waited:
		return err
	case <-time.After(logBinaryWait):
		l.cmd.Process.Kill()
		return <-l.waited
	}
}
