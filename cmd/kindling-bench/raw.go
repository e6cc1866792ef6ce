package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The raw baseline: the least a program must do to run a Firecracker VMM.
// It deliberately shares no code with fcapi or vmm: it execs Firecracker,
// dials the API socket in a tight loop, sends the same requests kindling
// sends over a bare net/http client that keeps its connection alive, and
// kills and reaps the process.

// rawVM is one Firecracker process run by the raw client.
type rawVM struct {
	cmd    *exec.Cmd
	dir    string
	sock   string
	client *rawClient
	// found is closed once the console has shown the marker; eof once the
	// console stream has ended (the process has exited); done once the
	// process has been reaped.
	found, eof, done chan struct{}
}

// startRawProcess execs Firecracker with its API socket and log file in dir
// and starts the goroutine that reads its console and then reaps it. It
// does not wait for the API.
func startRawProcess(fc, dir, marker string) (*rawVM, error) {
	logPath := filepath.Join(dir, "fc.log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raw: create log file: %w", err)
	}
	f.Close()
	sock := filepath.Join(dir, "fc.sock")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("raw: console pipe: %w", err)
	}
	cmd := exec.Command(fc, "--api-sock", sock, "--log-path", logPath)
	cmd.Dir = dir
	cmd.Stdout = w
	// Its own session: a Ctrl-C meant for the bench does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("raw: start %s: %w", fc, err)
	}
	w.Close()
	vm := &rawVM{
		cmd: cmd, dir: dir, sock: sock, client: newRawClient(sock),
		found: make(chan struct{}), eof: make(chan struct{}), done: make(chan struct{}),
	}
	go vm.watch(r, []byte(marker))
	return vm, nil
}

// watch reads the console until it ends, closing found when the marker
// appears, then reaps the process.
func (vm *rawVM) watch(r *os.File, marker []byte) {
	var seen []byte
	buf := make([]byte, 4096)
	foundClosed := len(marker) == 0
	for {
		n, err := r.Read(buf)
		if n > 0 && !foundClosed {
			seen = append(seen, buf[:n]...)
			if bytes.Contains(seen, marker) {
				close(vm.found)
				foundClosed = true
				seen = nil
			} else if len(seen) > 64<<10 {
				seen = seen[len(seen)-len(marker):]
			}
		}
		if err != nil {
			break
		}
	}
	r.Close()
	close(vm.eof)
	_ = vm.cmd.Wait()
	close(vm.done)
}

// kill sends SIGKILL and waits until the process is reaped.
func (vm *rawVM) kill() {
	_ = vm.cmd.Process.Kill() // fails only for a process reaped already
	<-vm.done
	vm.client.close()
}

// waitMarker waits until the console has shown the marker.
func (vm *rawVM) waitMarker(ctx context.Context) error {
	select {
	case <-vm.found:
		return nil
	case <-vm.eof:
		select {
		case <-vm.found:
			return nil
		default:
		}
		return errors.New("raw: console ended before the marker appeared")
	case <-ctx.Done():
		return fmt.Errorf("raw: wait for the console marker: %w", ctx.Err())
	}
}

// bootRequests configure and start the test guest: the requests kindling's
// driver sends for the same VM, in the same order (the version probe is
// sent by the caller first).
func (vm *rawVM) boot(ctx context.Context, kernel string, ph *rawPhases) error {
	c := vm.client
	if err := c.do(ctx, http.MethodPut, "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`); err != nil {
		return err
	}
	body := fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":%q}`, kernel, rawBootArgs)
	if err := c.do(ctx, http.MethodPut, "/boot-source", body); err != nil {
		return err
	}
	ph.config = time.Now()
	if err := c.do(ctx, http.MethodPut, "/actions", `{"action_type":"InstanceStart"}`); err != nil {
		return err
	}
	ph.instance = time.Now()
	return nil
}

// rawBootArgs is the kernel command line kindling's driver sends by default.
const rawBootArgs = "console=ttyS0 reboot=k panic=1 pci=off iommu=off net.ifnames=0 random.trust_cpu=on acpi=off"

// rawClient is a minimal HTTP client for Firecracker's API socket: one
// kept-alive connection, dialled in a tight loop until the socket accepts.
type rawClient struct {
	tr *http.Transport
	hc *http.Client
}

func newRawClient(sock string) *rawClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialTight(ctx, sock)
		},
		DisableCompression:  true,
		MaxIdleConnsPerHost: 2,
	}
	return &rawClient{tr: tr, hc: &http.Client{Transport: tr}}
}

// dialRetry is the pause between two connection attempts. Spinning without
// a pause was measured slower on a busy 2-core host (it takes the CPU the
// starting Firecracker needs), so the baseline sleeps this little instead.
const dialRetry = 50 * time.Microsecond

// dialTight connects to the Unix socket, retrying every dialRetry until it
// accepts or ctx ends.
func dialTight(ctx context.Context, sock string) (net.Conn, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("raw: dial %s: %w", sock, ctx.Err())
		}
		time.Sleep(dialRetry)
	}
}

// do sends one request and checks for a 2xx answer, reading the body so
// that the connection is kept.
func (c *rawClient) do(ctx context.Context, method, path, body string) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("raw: %s %s: %w", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("raw: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

func (c *rawClient) close() { c.tr.CloseIdleConnections() }

// rawStart runs a raw VM up to a ready API (GET /version answered) and,
// when kernel is set, boots it and waits for the marker.
func rawStart(ctx context.Context, e *env, kernel string) (*rawVM, error) {
	return rawStartPhases(ctx, e, kernel, nil)
}

// rawPhases are the instants a raw start passed its phases.
type rawPhases struct {
	api, config, instance time.Time
}

// rawStartPhases is rawStart, noting the instants of its phases in ph
// (when not nil).
func rawStartPhases(ctx context.Context, e *env, kernel string, ph *rawPhases) (*rawVM, error) {
	if ph == nil {
		ph = &rawPhases{}
	}
	dir, err := e.newDir("r")
	if err != nil {
		return nil, err
	}
	vm, err := startRawProcess(e.fc, dir, e.marker)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.track.addRaw(vm)
	fail := func(err error) (*rawVM, error) {
		e.rawDone(vm)
		return nil, err
	}
	if err := vm.client.do(ctx, http.MethodGet, "/version", ""); err != nil {
		return fail(err)
	}
	ph.api = time.Now()
	if kernel == "" {
		return vm, nil
	}
	if err := vm.boot(ctx, kernel, ph); err != nil {
		return fail(err)
	}
	if err := vm.waitMarker(ctx); err != nil {
		return fail(err)
	}
	return vm, nil
}

// rawRestore runs a raw VM that loads a snapshot and resumes it.
func rawRestore(ctx context.Context, e *env, statePath, memPath string) (*rawVM, error) {
	dir, err := e.newDir("r")
	if err != nil {
		return nil, err
	}
	vm, err := startRawProcess(e.fc, dir, "")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.track.addRaw(vm)
	if err := vm.client.do(ctx, http.MethodGet, "/version", ""); err != nil {
		e.rawDone(vm)
		return nil, err
	}
	body := fmt.Sprintf(`{"snapshot_path":%q,"mem_backend":{"backend_type":"File","backend_path":%q},"resume_vm":true}`, statePath, memPath)
	if err := vm.client.do(ctx, http.MethodPut, "/snapshot/load", body); err != nil {
		e.rawDone(vm)
		return nil, err
	}
	return vm, nil
}
