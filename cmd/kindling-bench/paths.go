package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

// How each kindling path starts a VM. The raw path's counterparts are in
// raw.go.

// libStart starts a VM with the vmm driver, in a fresh run directory; with
// wait set, Start returns once the console shows the marker.
func libStart(ctx context.Context, e *env, kernel string, wait bool, opts ...vmm.Option) (*vmm.Machine, error) {
	dir, err := e.newDir("l")
	if err != nil {
		return nil, err
	}
	cfg := vmm.Config{Firecracker: e.fc, RunDir: dir, Kernel: kernel}
	if wait {
		cfg.WaitConsole = e.marker
	}
	m, err := vmm.New(cfg, opts...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.track.addMachine(m)
	if err := m.Start(ctx); err != nil {
		e.track.dropMachine(m)
		os.RemoveAll(dir)
		return nil, err
	}
	return m, nil
}

// rtStart creates and starts a sandbox with the runtime in this process
// (its monitor is the kindling executable).
func rtStart(ctx context.Context, e *env, kernel string) (string, error) {
	id := e.newID("s")
	e.track.addSandbox(id)
	spec := sandbox.Spec{ID: id, Kernel: kernel, Firecracker: e.fc, WaitConsole: e.marker}
	if _, err := e.rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		e.track.dropSandbox(id)
		return "", err
	}
	if _, err := e.rt.Start(ctx, id); err != nil {
		return "", errors.Join(err, e.sandboxDone(id))
	}
	return id, nil
}

// cliStart runs `kindling run --detach` and returns the sandbox's ID.
func cliStart(ctx context.Context, e *env, kernel string) (string, error) {
	id := e.newID("c")
	e.track.addSandbox(id)
	if _, err := cli(ctx, e, "run", "--detach", "--name", id, "--kernel", kernel,
		"--firecracker", e.fc, "--wait-console", e.marker); err != nil {
		return "", errors.Join(err, e.sandboxDone(id))
	}
	return id, nil
}

// cli runs the kindling executable on the bench's state root and returns
// its standard output.
func cli(ctx context.Context, e *env, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.kindling, append([]string{"--root", e.root}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kindling %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// logClock is a slog handler that notes when the driver logs its debug
// milestones: the library's side of the phase timings (and of spawn → API
// ready, which the driver does not otherwise expose).
type logClock struct {
	mu sync.Mutex // guards at
	at map[string]time.Time
}

// Driver debug messages the bench times.
const (
	apiReadyMsg = "firecracker API ready"
	stepDoneMsg = "boot step done"
)

func newLogClock() *logClock { return &logClock{at: map[string]time.Time{}} }

func (h *logClock) Enabled(context.Context, slog.Level) bool { return true }

func (h *logClock) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	if key == stepDoneMsg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "step" {
				key += " " + a.Value.String()
				return false
			}
			return true
		})
	}
	h.mu.Lock()
	if _, ok := h.at[key]; !ok {
		h.at[key] = r.Time
	}
	h.mu.Unlock()
	return nil
}

func (h *logClock) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logClock) WithGroup(string) slog.Handler      { return h }

// when returns when msg was first logged (zero if never).
func (h *logClock) when(msg string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at[msg]
}

// vmRSS returns a process's resident set size from /proc/PID/status.
func vmRSS(pid int) (float64, error) { return procStatus(pid, "VmRSS") }

// procStatus returns a size field (in kB there) of /proc/PID/status, in
// bytes.
func procStatus(pid int, field string) (float64, error) {
	return kbField(fmt.Sprintf("/proc/%d/status", pid), pid, field)
}

// kbField reads a "Field: N kB" line of a /proc file of pid, in bytes.
func kbField(path string, pid int, field string) (float64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no process to measure (pid %d)", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			kb, err := strconv.ParseFloat(fields[0], 64)
			if err != nil {
				return 0, fmt.Errorf("%s of pid %d: %w", field, pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s for pid %d", field, pid)
}

// dirBytes returns the space the regular files under dir take (allocated
// blocks, so that sparse files count for what they use).
func dirBytes(dir string) (float64, error) {
	var total float64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file went away meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += float64(st.Blocks) * 512
		} else {
			total += float64(fi.Size())
		}
		return nil
	})
	return total, err
}

// sandboxMemory measures what a sandbox of the runtime or CLI path costs
// beyond its Firecracker: "memory" is the monitor's VmRSS plus the files in
// the sandbox's directory; "memory_pss" counts the monitor's Pss instead
// (its executable's pages divided among the processes that map them: with
// one sandbox running, the monitor alone maps kindling-monitor, so this is
// what the first sandbox costs); "memory_private" counts only the
// monitor's anonymous memory (RssAnon: its executable's pages are shared
// by every monitor) plus the files. "fc_rss" is Firecracker's own VmRSS.
func sandboxMemory(ctx context.Context, e *env, id string) (sample, error) {
	in, err := e.rt.Inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	mon, err := vmRSS(in.MonitorPID)
	if err != nil {
		return nil, fmt.Errorf("monitor of %s: %w", id, err)
	}
	anon, err := procStatus(in.MonitorPID, "RssAnon")
	if err != nil {
		return nil, fmt.Errorf("monitor of %s: %w", id, err)
	}
	pss, err := smapsRollup(in.MonitorPID, "Pss")
	if err != nil {
		return nil, fmt.Errorf("monitor of %s: %w", id, err)
	}
	files, err := dirBytes(in.Dir)
	if err != nil {
		return nil, err
	}
	fcRSS, err := vmRSS(in.PID)
	if err != nil {
		return nil, fmt.Errorf("firecracker of %s: %w", id, err)
	}
	return sample{"memory": mon + files, "memory_pss": pss + files, "memory_private": anon + files, "fc_rss": fcRSS}, nil
}

// sharedMemory is what each of the sandboxes ids costs beyond its
// Firecracker while all of them run: the monitors' proportional set size
// (Pss, from /proc/PID/smaps_rollup: a page shared by n processes counts
// 1/n to each, so the kindling executable's pages, mapped by every
// monitor, are paid once rather than once per sandbox) plus the files in
// the sandbox directories, averaged over the sandboxes.
// The second result, fleet, also counts each Firecracker's Pss: the whole
// host memory one sandbox of the fleet costs, guest memory included.
func sharedMemory(ctx context.Context, e *env, ids []string) (beyond, fleet float64, err error) {
	for _, id := range ids {
		in, err := e.rt.Inspect(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		pss, err := smapsRollup(in.MonitorPID, "Pss")
		if err != nil {
			return 0, 0, fmt.Errorf("monitor of %s: %w", id, err)
		}
		fcPss, err := smapsRollup(in.PID, "Pss")
		if err != nil {
			return 0, 0, fmt.Errorf("firecracker of %s: %w", id, err)
		}
		files, err := dirBytes(in.Dir)
		if err != nil {
			return 0, 0, err
		}
		beyond += pss + files
		fleet += pss + fcPss + files
	}
	n := float64(len(ids))
	return beyond / n, fleet / n, nil
}

// smapsRollup returns a size field (kB there) of /proc/PID/smaps_rollup, in
// bytes.
func smapsRollup(pid int, field string) (float64, error) {
	return kbField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), pid, field)
}
