package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/agent"
)

// How the runtime knows a sandbox's guest runs kindling-agent: Spec.Agent,
// set by the caller (--agent), or implied by a kernel command line whose
// init= names a file called kindling-agent. Such a sandbox gets a vsock
// device (CID DefaultAgentCID unless Spec.VsockCID says otherwise) and, if
// the command line names no init, init=AgentInit, where kindling's images
// hold the agent. After every start (a boot, a restore, a clone) the
// runtime waits for the agent to answer and initialises it (Init) with the
// sandbox's access token, fresh entropy from the host and the sandbox's
// hostname.
const (
	// AgentInit is where kindling's images hold the agent.
	AgentInit = "/.kindling/kindling-agent"
	// DefaultAgentCID is the guest CID of an agent sandbox's vsock device
	// when the spec gives none.
	DefaultAgentCID = 3
	// DefaultAgentTimeout bounds the wait for the agent after a start, and
	// the wait for its first answer to each request (WithAgentTimeout).
	DefaultAgentTimeout = 10 * time.Second
)

// Files of the agent's access token in the sandbox directory (mode 0600,
// never in state.json). tokenParentName is the token of the sandbox a
// snapshot was taken from, which a restored guest still holds until it is
// initialised.
const (
	tokenName       = "agent.token"
	tokenParentName = "agent.parent-token"
)

// WithAgentTimeout sets how long the runtime waits for a sandbox's guest
// agent: after a start, for it to answer at all; on each call, for its
// first answer (default DefaultAgentTimeout).
func WithAgentTimeout(d time.Duration) Option {
	return func(r *Runtime) {
		if d > 0 {
			r.agentTimeout = d
		}
	}
}

// applyAgentDefaults completes the spec of a sandbox whose guest runs the
// agent: Agent set when init= names it, a vsock device, an init=.
func applyAgentDefaults(s *Spec) error {
	init, hasInit := kernelInit(s.KernelArgs)
	if hasInit && filepath.Base(init) == "kindling-agent" {
		s.Agent = true
	}
	if !s.Agent {
		return nil
	}
	if s.Kernel == "" {
		return fmt.Errorf("%w: the built-in demo guest runs no agent: give a Linux kernel and a root filesystem that holds kindling-agent", ErrInvalidSpec)
	}
	if s.Rootfs == nil {
		return fmt.Errorf("%w: an agent sandbox needs a root filesystem that holds kindling-agent (give a rootfs)", ErrInvalidSpec)
	}
	if s.VsockCID == 0 {
		s.VsockCID = DefaultAgentCID
	}
	if !hasInit {
		s.KernelArgs = strings.TrimSpace(s.KernelArgs + " init=" + AgentInit)
	}
	return nil
}

// kernelInit returns the last init= of a kernel command line (the kernel
// takes the last), ignoring what follows "--" (the init's own arguments).
func kernelInit(args string) (string, bool) {
	var init string
	found := false
	for _, f := range strings.Fields(args) {
		if f == "--" {
			break
		}
		if v, ok := strings.CutPrefix(f, "init="); ok {
			init, found = v, true
		}
	}
	return init, found
}

// newToken writes a fresh access token into the sandbox directory dir.
func newToken(dir string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("agent token: %w", err)
	}
	return writeSecret(dir, tokenName, hex.EncodeToString(b))
}

// writeSecret writes a 0600 file that must not exist yet, not following
// a symbolic link planted at its name.
func writeSecret(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, werr := io.WriteString(f, value)
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// readSecret reads a secret file of dir; a missing one is "".
func readSecret(dir, name string) (string, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// copySecret copies a secret file from one directory to another, if it
// exists.
func copySecret(from, to, name, as string) error {
	v, err := readSecret(from, name)
	if err != nil || v == "" {
		return err
	}
	os.Remove(filepath.Join(to, as))
	return writeSecret(to, as, v)
}

// guestHostname is the hostname a sandbox's guest gets: its ID, with the
// characters a hostname cannot hold replaced.
func guestHostname(id string) string {
	h := strings.Map(func(r rune) rune {
		if r == '_' {
			return '-'
		}
		return r
	}, id)
	if len(h) > 64 {
		h = h[:64]
	}
	return h
}

// initAgent waits until the agent of the started sandbox in answers, then
// initialises it: the sandbox's token (proving itself with the token a
// restored guest still holds, if any), fresh entropy, the clock and the
// hostname. The error names the sandbox and the socket.
func (r *Runtime) initAgent(ctx context.Context, in Info) error {
	tok, err := readSecret(in.Dir, tokenName)
	if err == nil && tok == "" {
		// A sandbox created before tokens: it gets one now.
		if err = newToken(in.Dir); err == nil {
			tok, err = readSecret(in.Dir, tokenName)
		}
	}
	if err != nil {
		return fmt.Errorf("sandbox %q: %w", in.ID, err)
	}
	parent, err := readSecret(in.Dir, tokenParentName)
	if err != nil {
		return fmt.Errorf("sandbox %q: %w", in.ID, err)
	}
	wait := r.agentTimeout
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := agent.New(agent.Config{VsockPath: in.VsockSocket, AccessToken: parent, DialTimeout: wait, RequestTimeout: wait})
	if err != nil {
		return fmt.Errorf("sandbox %q: %w", in.ID, err)
	}
	defer c.Close()
	start := time.Now()
	var last error
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err = c.Health(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			if last == nil {
				last = err
			}
			return fmt.Errorf("sandbox %q: the guest agent does not answer on %s (vsock port %d) within %v: %w", in.ID, in.VsockSocket, agent.Port, wait, last)
		}
		last = err
		if st := r.statusOf(ctx, in.ID); st != Running {
			return fmt.Errorf("sandbox %q: it is %s before its guest agent answered on %s (vsock port %d): %w", in.ID, st, in.VsockSocket, agent.Port, err)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
	r.log.Debug("guest agent answers", "sandbox", in.ID, "after", time.Since(start))
	if err := c.Init(ctx, agent.InitConfig{AccessToken: tok, Hostname: guestHostname(in.ID)}); err != nil {
		return fmt.Errorf("sandbox %q: initialise the guest agent on %s: %w", in.ID, in.VsockSocket, err)
	}
	if parent != "" {
		// The guest holds the sandbox's own token now.
		os.Remove(filepath.Join(in.Dir, tokenParentName))
	}
	return nil
}

// statusOf is the sandbox's status now, "" when it cannot be read.
func (r *Runtime) statusOf(ctx context.Context, id string) Status {
	var rec record
	if err := r.st.Load(id, &rec); err != nil {
		return ""
	}
	return r.reconcile(ctx, &rec)
}

// startAgent is the end of a start of an agent sandbox: the agent is
// initialised, or the sandbox is killed and the error says why.
func (r *Runtime) startAgent(ctx context.Context, in Info) error {
	err := r.initAgent(ctx, in)
	if err == nil {
		return nil
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if kerr := r.Kill(kctx, in.ID); kerr != nil {
		return errors.Join(err, kerr)
	}
	return fmt.Errorf("%w (the sandbox was stopped)", err)
}

// createToken gives the new sandbox id its access token; a sandbox that
// cannot have one is removed.
func (r *Runtime) createToken(ctx context.Context, id string) error {
	dir, err := r.st.Dir(id)
	if err == nil {
		err = newToken(dir)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("create sandbox %q: %w", id, err), r.Remove(context.WithoutCancel(ctx), id, true))
	}
	return nil
}

// snapshotToken copies the token of the snapshotted sandbox rec into the
// snapshot directory dir (mode 0600): its guest's memory holds that token,
// and a sandbox restored from the snapshot proves itself with it when it
// initialises the agent with a token of its own. The snapshot's memory file
// holds the token anyway, so the copy reveals nothing more.
func snapshotToken(r *Runtime, rec *record, dir string) error {
	if !rec.Spec.Agent {
		return nil
	}
	from, err := r.st.Dir(rec.ID)
	if err != nil {
		return err
	}
	return copySecret(from, dir, tokenName, tokenName)
}

// restoredToken gives a sandbox restored from the snapshot in snapDir,
// living in dir, a token of its own and the snapshot's as its parent token.
func restoredToken(dir, snapDir string) error {
	if err := newToken(dir); err != nil {
		return err
	}
	return copySecret(snapDir, dir, tokenName, tokenParentName)
}

// AgentToken returns the access token the agent of sandbox id requires
// once initialised: the one the runtime gives it after every start. A
// sandbox created without one (no Spec.Agent) gets one now, kept like the
// others, for a caller that initialises its agent itself. It is a secret:
// for a server that hands it to the sandbox's own clients (E2B's
// envdAccessToken), never for logs.
func (r *Runtime) AgentToken(ctx context.Context, id string) (string, error) {
	var rec record
	if err := r.st.Load(id, &rec); err != nil {
		return "", r.loadError(id, err)
	}
	dir, err := r.st.Dir(id)
	if err != nil {
		return "", r.loadError(id, err)
	}
	tok, err := readSecret(dir, tokenName)
	if err == nil && tok == "" {
		if err = newToken(dir); err == nil || errors.Is(err, os.ErrExist) {
			tok, err = readSecret(dir, tokenName)
		}
	}
	if err != nil {
		return "", fmt.Errorf("sandbox %q: %w", id, err)
	}
	return tok, nil
}
