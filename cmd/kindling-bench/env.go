package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/gotool"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
	"github.com/kindling-vm/kindling/vmm"
)

// env is what every measurement works with. Everything it spawns or
// creates is under tmp or recorded in track, and close removes it all.
type env struct {
	fc       string // the firecracker executable
	kindling string // the kindling executable (the CLI path and the monitors)
	tmp      string // the bench's own temporary directory
	root     string // the state root of the runtime and CLI paths
	rt       *sandbox.Runtime
	tpl      *template.Store // rt's templates
	halt     string          // the test guest that prints marker and halts
	poweroff string          // the test guest that prints marker and powers off
	marker   string
	phases   bool // also time the phases of a start
	track    *tracker
	seq      atomic.Int64
	agent    agentBox  // the agent scenarios' sandbox (agent.go)
	daemon   daemonBin // the server scenarios' kindlingd (daemon.go)
}

// marker is what the test guests print; start waits for it on the console.
const marker = "kindling-bench guest up"

// opTimeout bounds one measured operation (and its setup).
const opTimeout = 60 * time.Second

// newEnv makes the temporary directory, writes the test guests, builds the
// kindling executable unless one is given, and opens the state root.
func newEnv(ctx context.Context, fc, kindling, base string, progress func(string, ...any)) (_ *env, err error) {
	tmp, err := os.MkdirTemp(base, "kb")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	e := &env{fc: fc, tmp: tmp, marker: marker, track: newTracker()}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	e.halt = filepath.Join(tmp, "halt.elf")
	e.poweroff = filepath.Join(tmp, "poweroff.elf")
	if err := guest.WriteFile(e.halt, guest.Options{Message: marker, Mode: guest.Halt}); err != nil {
		return nil, fmt.Errorf("write test guest: %w", err)
	}
	if err := guest.WriteFile(e.poweroff, guest.Options{Message: marker, Mode: guest.PowerOff}); err != nil {
		return nil, fmt.Errorf("write test guest: %w", err)
	}
	if kindling == "" {
		progress("building kindling")
		if kindling, err = buildKindling(ctx, tmp); err != nil {
			return nil, err
		}
	} else if kindling, err = filepath.Abs(kindling); err != nil {
		return nil, err
	}
	e.kindling = kindling
	e.root = filepath.Join(tmp, "root")
	e.rt, err = sandbox.Open(e.root, sandbox.WithMonitorExecutable(kindling))
	if err == nil {
		e.tpl, err = template.Open(e.rt)
	}
	if err != nil {
		return nil, fmt.Errorf("open state root: %w", err)
	}
	return e, nil
}

// newDir makes a fresh, short directory for one VMM.
func (e *env) newDir(prefix string) (string, error) {
	dir := filepath.Join(e.tmp, fmt.Sprintf("%s%d", prefix, e.seq.Add(1)))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("make run dir: %w", err)
	}
	return dir, nil
}

// newID returns a fresh sandbox ID.
func (e *env) newID(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, e.seq.Add(1))
}

// rawDone kills and reaps a raw VM and removes its directory.
func (e *env) rawDone(vm *rawVM) {
	vm.kill()
	e.track.dropRaw(vm)
	os.RemoveAll(vm.dir)
}

// libDone kills a library VM and removes its run directory.
func (e *env) libDone(m *vmm.Machine) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_ = m.Kill(ctx)
	e.track.dropMachine(m)
	os.RemoveAll(m.Config().RunDir)
}

// sandboxDone removes a sandbox of the runtime or CLI path, killing it.
func (e *env) sandboxDone(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := e.removeSandbox(ctx, id)
	e.track.dropSandbox(id)
	return err
}

// removeSandbox removes a sandbox with the runtime. When the runtime cannot
// (it cannot reach the VMM's API, say), it kills the sandbox's VMM and
// monitor by PID and tries again, so that nothing is left running; the
// first error is still returned.
func (e *env) removeSandbox(ctx context.Context, id string) error {
	err := e.rt.Remove(ctx, id, true)
	if err == nil || errors.Is(err, sandbox.ErrNotFound) {
		return nil
	}
	if in, ierr := e.rt.Inspect(ctx, id); ierr == nil {
		for _, pid := range []int{in.PID, in.MonitorPID} {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		for _, pid := range []int{in.PID, in.MonitorPID} {
			waitGone(ctx, pid)
		}
	}
	if rerr := e.rt.Remove(ctx, id, true); rerr != nil && !errors.Is(rerr, sandbox.ErrNotFound) {
		return errors.Join(err, rerr)
	}
	return fmt.Errorf("remove sandbox %s (killed it by PID instead): %w", id, err)
}

// waitGone waits until /proc/PID is gone or is a zombie (a process that is
// not our child, or that another goroutine reaps), or ctx ends.
func waitGone(ctx context.Context, pid int) {
	for ctx.Err() == nil {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if _, rest, ok := strings.Cut(string(b), ") "); ok && strings.HasPrefix(rest, "Z") {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// close ends everything the bench started and removes what it made.
func (e *env) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
	defer cancel()
	var errs []error
	raws, machines, ids := e.track.all()
	for _, vm := range raws {
		vm.kill()
	}
	for _, m := range machines {
		if err := m.Kill(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if e.rt != nil {
		// Everything under the root, also sandboxes a killed CLI process
		// created but did not report.
		if infos, err := e.rt.List(ctx, sandbox.ListOptions{}); err == nil {
			for _, in := range infos {
				ids = append(ids, in.ID)
			}
		}
		for _, id := range ids {
			if err := e.removeSandbox(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(e.tmp); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// buildKindling builds cmd/kindling into dir with go build, from the module
// this program's source belongs to (else the working directory's).
func buildKindling(ctx context.Context, dir string) (string, error) {
	modRoot, err := moduleRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("build kindling: %w: give --kindling PATH", err)
	}
	goBin, err := gotool.Path()
	if err != nil {
		return "", fmt.Errorf("build kindling: %w (or give --kindling PATH)", err)
	}
	// kindling-monitor goes next to kindling, as an install puts it, so
	// that each sandbox's monitor is the small executable.
	for _, name := range []string{"kindling", sandbox.MonitorExecutableName} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = modRoot
		// Static, as the README builds them: no dynamic loader at each
		// start.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s in %s: %w: %s (or give --kindling PATH)", name, modRoot, err, strings.TrimSpace(string(b)))
		}
	}
	return filepath.Join(dir, "kindling"), nil
}

// moduleRoot finds kindling's module: next to this source file when it is
// still there, else from `go env GOMOD` in the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if isKindlingModule(root) {
			return filepath.Clean(root), nil
		}
	}
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull || !isKindlingModule(filepath.Dir(mod)) {
		return "", errors.New("not inside kindling's source tree")
	}
	return filepath.Dir(mod), nil
}

func isKindlingModule(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	return err == nil && strings.Contains(string(b), "module github.com/kindling-vm/kindling\n")
}

// tracker records what is running, so that an interrupted run still ends it.
type tracker struct {
	mu        sync.Mutex // guards the maps
	raws      map[*rawVM]struct{}
	machines  map[*vmm.Machine]struct{}
	sandboxes map[string]struct{}
}

func newTracker() *tracker {
	return &tracker{raws: map[*rawVM]struct{}{}, machines: map[*vmm.Machine]struct{}{}, sandboxes: map[string]struct{}{}}
}

func (t *tracker) addRaw(vm *rawVM) { t.mu.Lock(); t.raws[vm] = struct{}{}; t.mu.Unlock() }
func (t *tracker) dropRaw(vm *rawVM) {
	t.mu.Lock()
	delete(t.raws, vm)
	t.mu.Unlock()
}
func (t *tracker) addMachine(m *vmm.Machine) { t.mu.Lock(); t.machines[m] = struct{}{}; t.mu.Unlock() }
func (t *tracker) dropMachine(m *vmm.Machine) {
	t.mu.Lock()
	delete(t.machines, m)
	t.mu.Unlock()
}
func (t *tracker) addSandbox(id string) { t.mu.Lock(); t.sandboxes[id] = struct{}{}; t.mu.Unlock() }
func (t *tracker) dropSandbox(id string) {
	t.mu.Lock()
	delete(t.sandboxes, id)
	t.mu.Unlock()
}

func (t *tracker) all() ([]*rawVM, []*vmm.Machine, []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var raws []*rawVM
	for vm := range t.raws {
		raws = append(raws, vm)
	}
	var ms []*vmm.Machine
	for m := range t.machines {
		ms = append(ms, m)
	}
	var ids []string
	for id := range t.sandboxes {
		ids = append(ids, id)
	}
	t.raws, t.machines, t.sandboxes = map[*rawVM]struct{}{}, map[*vmm.Machine]struct{}{}, map[string]struct{}{}
	return raws, ms, ids
}

// monitorText says which executable the runtime's monitors run.
func monitorText(rt *sandbox.Runtime) string {
	exe, small := rt.MonitorExecutable()
	if small {
		return exe + " (the small monitor)"
	}
	return exe + " (kindling re-executed: no kindling-monitor next to it)"
}
