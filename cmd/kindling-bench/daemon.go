package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/template"
)

// The server scenarios run kindlingd as a child process — so that its own
// memory can be read from /proc — on a state root and socket of its own
// under the bench's temporary directory, with the bench's Firecracker.
// The bench keeps a runtime of its own on that root too: it makes the
// templates before the server starts (a warm pool fills from the start)
// and removes whatever is left when the server has stopped.

// daemonBin is the kindlingd executable, built on first use unless
// --kindlingd names one.
type daemonBin struct {
	once    sync.Once
	path    string
	monitor string // its --monitor, when --kindlingd-monitor is given
	spares  int    // its --spare-monitors, when ≥ 0 (--kindlingd-spares)
	err     error
}

// kindlingd returns the kindlingd executable the server scenarios run.
func (e *env) kindlingd(ctx context.Context) (string, error) {
	b := &e.daemon
	b.once.Do(func() {
		if b.monitor != "" {
			if b.monitor, b.err = filepath.Abs(b.monitor); b.err != nil {
				return
			}
		}
		if b.path != "" {
			b.path, b.err = filepath.Abs(b.path)
			return
		}
		// A directory of its own: kindlingd runs a kindling-monitor it
		// finds next to itself, as an installation would have it.
		dir := filepath.Join(e.tmp, "kindlingd-bin")
		if b.err = os.Mkdir(dir, 0o755); b.err != nil {
			return
		}
		if b.path, b.err = buildTool(ctx, dir, "./cmd/kindlingd", "kindlingd"); b.err != nil {
			return
		}
		if modRoot, err := moduleRoot(ctx); err == nil {
			if _, err := os.Stat(filepath.Join(modRoot, "cmd", "kindling-monitor")); err == nil {
				_, b.err = buildTool(ctx, dir, "./cmd/kindling-monitor", "kindling-monitor")
			}
		}
	})
	return b.path, b.err
}

// checkExecutable checks that the path given to flag, if any, is an
// executable file, before anything is started.
func checkExecutable(flag, path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s %s: not an executable file", flag, path)
	}
	return nil
}

// buildTool builds the command pkg of kindling's module into dir/name.
func buildTool(ctx context.Context, dir, pkg, name string) (string, error) {
	modRoot, err := moduleRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("build %s: %w: give --%s PATH", name, err, name)
	}
	goBin, err := gotool.Path()
	if err != nil {
		return "", fmt.Errorf("build %s: %w (or give --%s PATH)", name, err, name)
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = modRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s in %s: %w: %s (or give --%s PATH)", pkg, modRoot, err, strings.TrimSpace(string(b)), name)
	}
	return out, nil
}

// daemon is one kindlingd run by the bench.
type daemon struct {
	cmd    *exec.Cmd
	root   string
	sock   string
	rt     *sandbox.Runtime // the bench's own runtime on root
	tpl    *template.Store
	client *remote.Client
	hc     *http.Client // plain HTTP over the socket (metrics)
	done   chan struct{}
	log    *tailBuffer // the end of its stderr, for errors
}

// daemonOptions say what a daemon serves.
type daemonOptions struct {
	// templates are made (from a running test-guest sandbox) before the
	// server starts.
	templates []string
	// pools asks for warm pools: template name → clones.
	pools map[string]int
}

// startDaemon makes a state root, the templates asked for, and starts
// kindlingd on it; it returns once the server answers.
func startDaemon(ctx context.Context, e *env, o daemonOptions) (_ *daemon, err error) {
	bin, err := e.kindlingd(ctx)
	if err != nil {
		return nil, err
	}
	root, err := e.newDir("d")
	if err != nil {
		return nil, err
	}
	d := &daemon{root: root, sock: filepath.Join(root, "kindlingd.sock"), done: make(chan struct{}), log: &tailBuffer{max: 8 << 10}}
	defer func() {
		if err != nil {
			err = errors.Join(err, d.close())
		}
	}()
	d.rt, err = sandbox.Open(root, sandbox.WithMonitorExecutable(e.kindling))
	if err == nil {
		d.tpl, err = template.Open(d.rt)
	}
	if err != nil {
		return nil, fmt.Errorf("open the server's state root: %w", err)
	}
	for _, name := range o.templates {
		if err := d.makeTemplate(ctx, e, name); err != nil {
			return nil, err
		}
	}
	args := []string{"--root", root, "--listen", "unix://" + d.sock, "--drain", "2s"}
	if e.daemon.monitor != "" {
		args = append(args, "--monitor", e.daemon.monitor)
	}
	if e.daemon.spares >= 0 {
		args = append(args, "--spare-monitors", strconv.Itoa(e.daemon.spares))
	}
	for name, n := range o.pools {
		args = append(args, "--pool", fmt.Sprintf("%s=%d", name, n))
	}
	d.cmd = exec.Command(bin, args...)
	// Its own session: a Ctrl-C meant for the bench does not reach it;
	// close ends it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	d.cmd.Stderr = d.log
	ready := &lineWatch{want: "kindlingd: ready", seen: make(chan struct{})}
	d.cmd.Stdout = ready
	// Its monitors have their own log files; should a descriptor leak to
	// one anyway, Wait does not wait for it.
	d.cmd.WaitDelay = 2 * time.Second
	if err := d.cmd.Start(); err != nil {
		d.cmd = nil
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	select {
	case <-ready.seen:
	case <-d.done:
		return nil, fmt.Errorf("kindlingd exited before it was ready: %s", d.log.String())
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for kindlingd: %w", ctx.Err())
	}
	d.client, err = remote.New(remote.Config{Host: "unix://" + d.sock})
	if err != nil {
		return nil, err
	}
	d.hc = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
	}}}
	for name, n := range o.pools {
		if err := d.waitPool(ctx, name, n); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// makeTemplate makes template name from a running test-guest sandbox of
// the bench's runtime on the server's root (the sandbox is removed after).
func (d *daemon) makeTemplate(ctx context.Context, e *env, name string) error {
	id := e.newID("ts")
	spec := sandbox.Spec{ID: id, Kernel: e.halt, Firecracker: e.fc, WaitConsole: e.marker}
	_, err := d.rt.Create(ctx, spec, sandbox.CreateOptions{})
	if err == nil {
		_, err = d.rt.Start(ctx, id)
	}
	if err == nil {
		_, err = d.tpl.Create(ctx, name, id, template.Options{})
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if rerr := d.rt.Remove(rctx, id, true); rerr != nil && !errors.Is(rerr, sandbox.ErrNotFound) {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("make template %s: %w", name, err)
	}
	return nil
}

// pid is the server's process ID.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// poolReady asks the server's metrics how many clones template name's
// warm pool holds ready.
func (d *daemon) poolReady(ctx context.Context, name string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://kindlingd/metrics", nil)
	if err != nil {
		return 0, err
	}
	res, err := d.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read kindlingd's metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read kindlingd's metrics: %s", res.Status)
	}
	want := fmt.Sprintf("kindlingd_pool_ready{template=%q} ", name)
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("kindlingd's metrics: %q: %w", sc.Text(), err)
			}
			return int(f), nil
		}
	}
	return 0, sc.Err() // not set yet: none ready
}

// waitPool waits until template name's warm pool holds n ready clones, so
// that its refill does not run during another path's measurement.
func (d *daemon) waitPool(ctx context.Context, name string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for {
		got, err := d.poolReady(ctx, name)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm pool of %s: %d of %d clones ready: %w (kindlingd: %s)", name, got, n, ctx.Err(), d.log.String())
		case <-d.done:
			return fmt.Errorf("kindlingd exited: %s", d.log.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// close stops the server (SIGTERM, then SIGKILL), removes every sandbox
// left on its root — the pools' paused clones among them — and the root.
func (d *daemon) close() error {
	var errs []error
	if d.client != nil {
		d.client.Close()
	}
	if d.hc != nil {
		d.hc.CloseIdleConnections()
	}
	if d.cmd != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			errs = append(errs, errors.New("kindlingd did not stop on SIGTERM within 10 s: killed"))
		}
	}
	if d.rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
		defer cancel()
		infos, err := d.rt.List(ctx, sandbox.ListOptions{})
		if err != nil {
			errs = append(errs, err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, in := range infos {
			wg.Go(func() {
				if err := removeOn(ctx, d.rt, in.ID); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if err := os.RemoveAll(d.root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeOn removes sandbox id with rt; when rt cannot, it kills the
// sandbox's VMM and monitor by PID and tries again (the first error is
// still returned).
func removeOn(ctx context.Context, rt *sandbox.Runtime, id string) error {
	err := rt.Remove(ctx, id, true)
	if err == nil || errors.Is(err, sandbox.ErrNotFound) {
		return nil
	}
	if in, ierr := rt.Inspect(ctx, id); ierr == nil {
		for _, pid := range []int{in.PID, in.MonitorPID} {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		for _, pid := range []int{in.PID, in.MonitorPID} {
			waitGone(ctx, pid)
		}
	}
	if rerr := rt.Remove(ctx, id, true); rerr != nil && !errors.Is(rerr, sandbox.ErrNotFound) {
		return errors.Join(err, rerr)
	}
	return fmt.Errorf("remove sandbox %s (killed it by PID instead): %w", id, err)
}

// lineWatch is a writer that closes seen once a line containing want has
// been written to it, and discards everything.
type lineWatch struct {
	want string
	seen chan struct{}
	mu   sync.Mutex // guards line and done
	line []byte
	done bool
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range p {
		if w.done {
			break
		}
		if c != '\n' {
			if len(w.line) < 4096 {
				w.line = append(w.line, c)
			}
			continue
		}
		if strings.Contains(string(w.line), w.want) {
			w.done = true
			close(w.seen)
		}
		w.line = w.line[:0]
	}
	return len(p), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards b
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
