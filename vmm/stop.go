package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// sigtermShare is the part of what is left of Stop's deadline that SIGTERM
// gets before SIGKILL; SIGKILL keeps the rest to be reaped.
const sigtermShare = 2

// minKillWait is the least time left for SIGKILL to take effect.
const minKillWait = 500 * time.Millisecond

// Stop ends the VMM within ctx's deadline (5 s when ctx has none): it asks
// the guest to shut down with Ctrl-Alt-Del and waits the stop grace (see
// WithStopGrace), then sends SIGTERM (with SIGCONT, so a stopped process can
// act on it) and waits up to half the time left, then SIGKILL, and waits
// for the process to be reaped. A jailed VMM in its own PID namespace
// ignores SIGTERM, so it goes from Ctrl-Alt-Del straight to SIGKILL. The API
// and vsock socket files are removed afterwards. Stop is idempotent: for a
// VMM that has already exited it only tidies up and returns nil at once.
// Before Start it returns a *StateError matching ErrNotRunning.
func (m *Machine) Stop(ctx context.Context) (err error) {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return &StateError{Op: "stop", State: phaseCreated.String()}
	}
	if p.exited() {
		m.tidy()
		return nil
	}
	ctx, span := m.startSpan(ctx, "vmm.Stop")
	defer func() { endSpan(span, err) }()

	m.stopMu.Lock()
	defer m.stopMu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStopTimeout)
		defer cancel()
	}
	began := time.Now()
	err = m.escalate(ctx, p)
	m.tidy()
	m.logger.Debug("VMM stopped", "took", time.Since(began), "exit", p.exit.String(), "err", err)
	return err
}

// Kill sends SIGKILL to the VMM and waits until it is reaped (or ctx ends),
// then removes its socket files. Killing an exited VMM returns nil.
func (m *Machine) Kill(ctx context.Context) error {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return &StateError{Op: "kill", State: phaseCreated.String()}
	}
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	err := m.killProcess(ctx, p)
	m.tidy()
	return err
}

// escalate runs Ctrl-Alt-Del → SIGTERM → SIGKILL until p exits.
func (m *Machine) escalate(ctx context.Context, p *process) error {
	// 1. Ctrl-Alt-Del, only for a running guest (a paused one cannot react).
	m.mu.Lock()
	client, ph := m.client, m.phaseLocked()
	m.mu.Unlock()
	if grace := m.opts.stopGrace; grace > 0 && client != nil && ph == phaseRunning {
		actx, cancel := context.WithTimeout(ctx, grace)
		err := client.SendCtrlAltDel(actx)
		if err == nil && waitDone(actx, p) {
			cancel()
			return nil
		}
		cancel()
		if err != nil {
			m.logger.Debug("Ctrl-Alt-Del not delivered", "err", err)
		}
	}
	if p.exited() {
		return nil
	}

	// A Firecracker that is the init of its own PID namespace (jailer
	// --new-pid-ns) never sees SIGTERM from outside: it installs no handler.
	if m.cfg.Jailer != nil && m.cfg.Jailer.NewPIDNS {
		return m.killProcess(context.WithoutCancel(ctx), p)
	}

	// 2. SIGTERM, with SIGCONT so that a SIGSTOPped VMM can act on it.
	if err := p.signal(kunix.SIGTERM); err != nil && !errProcessGone(err) {
		return fmt.Errorf("stop: send SIGTERM: %w", err)
	}
	if err := p.signal(kunix.SIGCONT); err != nil && !errProcessGone(err) {
		return fmt.Errorf("stop: send SIGCONT: %w", err)
	}
	termWait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		termWait = (time.Until(dl) - minKillWait) / sigtermShare
	}
	if termWait > 0 {
		tctx, cancel := context.WithTimeout(ctx, termWait)
		exited := waitDone(tctx, p)
		cancel()
		if exited {
			return nil
		}
	}

	// 3. SIGKILL, and wait to reap (with at least minKillWait even if ctx
	// is already over: a SIGKILLed process dies at once).
	return m.killProcess(context.WithoutCancel(ctx), p)
}

// killProcess sends SIGKILL to p and waits for it to be gone.
func (m *Machine) killProcess(ctx context.Context, p *process) error {
	if p.exited() {
		return nil
	}
	if err := p.signal(kunix.SIGKILL); err != nil && !errProcessGone(err) {
		return fmt.Errorf("send SIGKILL: %w", err)
	}
	// SIGCONT too: a SIGKILL is acted on even by a stopped process, but a
	// jailed Firecracker in its own PID namespace may be stopped in ways
	// that make an extra SIGCONT harmless and useful.
	_ = p.signal(kunix.SIGCONT)
	wctx := ctx
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) < minKillWait {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), minKillWait*4)
		defer cancel()
	}
	if !waitDone(wctx, p) {
		return fmt.Errorf("wait for firecracker (pid %d) after SIGKILL: %w", p.pid, wctx.Err())
	}
	return nil
}

// waitDone waits for p to exit or ctx to end, and reports whether p exited.
func waitDone(ctx context.Context, p *process) bool {
	select {
	case <-p.done:
		return true
	case <-ctx.Done():
		return p.exited()
	}
}

// tidy removes what a stopped VMM leaves behind: its API and vsock socket
// files (Firecracker never removes them) and idle API connections. The log
// and console files are the caller's to read and stay.
func (m *Machine) tidy() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase = phaseExited
	if m.client != nil {
		_ = m.client.Close()
	}
	if m.released || (m.proc != nil && !m.proc.exited()) {
		return // still running (Release, or a failed Stop): leave its sockets
	}
	_ = removeIfExists(m.socketPathLocked())
	if v := m.vsockPathLocked(); v != "" {
		_ = removeIfExists(v)
	}
	if m.jail != nil && m.jail.remove != nil {
		// The log is the caller's to read after the VMM ends, but under
		// the jailer it lives in the jail: keep a copy at Config.LogPath.
		if dst := m.cfg.LogPath; dst != "" && dst != m.jail.layout.LogPathHost {
			if err := copyLogFile(m.jail.layout.LogPathHost, dst); err != nil {
				m.logger.Debug("keep the jailed log", "err", err)
			}
		}
		if err := m.jail.remove(); err != nil {
			m.logger.Debug("remove jail", "err", err)
		}
		m.jail.remove = nil
	}
}

// copyLogFile copies the file src to dst (created or replaced, mode 0600).
func copyLogFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Release lets go of the VMM without stopping it: for a Machine from Attach
// (or a jailed VMM in its own PID namespace) it closes the pidfd the Machine
// watches the process through. The VMM keeps running and can be attached
// again from State. For a child process it only drops idle API connections:
// the child is still reaped when it exits.
func (m *Machine) Release() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client != nil {
		_ = m.client.Close()
	}
	if m.proc == nil || m.proc.pidfd == nil || m.released {
		return nil
	}
	m.released = true
	if err := m.proc.pidfd.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("release: %w", err)
	}
	return nil
}
