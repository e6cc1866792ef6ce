package template

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

// LabelBuild is the label of the sandbox Build boots to make a template
// (its value is the template's name): a sandbox that carries it is the
// template's builder, removed once the template is made or has failed.
const LabelBuild = "kindling.template.build"

// BuildOptions are the options of Store.Build.
type BuildOptions struct {
	// Spec is the machine the template is taken of, and so the machine of
	// every clone: Spec.Rootfs is the base root filesystem (an image's,
	// with the agent as init), which is copied for the builder and never
	// written. Spec.Agent is set by Build. The spec's ID is not used.
	Spec sandbox.Spec
	// DiskSize grows the builder's copy of the root filesystem to this
	// many bytes (image.Grow); 0 keeps the base's size.
	DiskSize int64
	// Run are the setup commands, run in order in the booted guest by its
	// agent, each as `/bin/sh -c COMMAND` with the image's environment,
	// working directory and user (a Dockerfile's RUN). The first that
	// fails ends the build with a *SetupError.
	Run []string
	// Output, when not nil, receives the setup commands' output (stdout
	// and stderr) as they run.
	Output io.Writer
	// Image and ImageRef record the image the root filesystem was made
	// from (its ID, and the name it was given by) in the template.
	Image    string
	ImageRef string
}

// setupTail is how much of a failed setup command's output a SetupError
// keeps: its end, where the reason usually is.
const setupTail = 16 << 10

// SetupError is a setup command of Build that failed: it exited with a
// status other than 0, or could not be started (ExitCode 127 for a
// missing shell, 126 for one that cannot be executed).
type SetupError struct {
	// Step is the command's place in BuildOptions.Run, from 1.
	Step    int
	Command string
	// ExitCode is the command's exit status (128+N for signal N).
	ExitCode int
	// Output is the end of its output (stdout and stderr, interleaved),
	// at most 16 KiB.
	Output []byte
	// Shown says the output was written to BuildOptions.Output already, so
	// the error's text leaves it out.
	Shown bool
}

func (e *SetupError) Error() string {
	msg := fmt.Sprintf("setup command %d (%q) exited with status %d", e.Step, e.Command, e.ExitCode)
	if out := strings.TrimRight(string(e.Output), "\n"); out != "" && !e.Shown {
		msg += "; its output ends:\n" + out
	}
	return msg
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use (stdout and stderr are copied by two goroutines).
type tailBuffer struct {
	mu  sync.Mutex // guards b
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.b)
}

// lockedWriter serialises writes to w from several goroutines.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Build makes template name from a root filesystem (E2B's template build):
// a builder sandbox boots its own copy of o.Spec.Rootfs with the agent as
// init, the setup commands o.Run are run in it once the agent answers, and
// the guest is snapshotted into the template, which owns a copy of the
// root filesystem as the commands left it. The builder is then removed.
// Clones (Run) start from the snapshot without booting, each with its own
// copy of that root filesystem.
//
// The name, the spec and the Firecracker release are checked before
// anything is spawned: clones of a template whose guest has the agent need
// their own vsock socket, so the release must load snapshots with a vsock
// override (Firecracker 1.16 or later). A failure, a failing setup command
// (*SetupError) or a cancelled ctx leaves neither template nor builder.
func (s *Store) Build(ctx context.Context, name string, o BuildOptions) (_ Template, err error) {
	ctx, end := s.span(ctx, "template.Build", name)
	defer end(&err)

	tdir, err := s.dir(name)
	if err != nil {
		return Template{}, err
	}
	if _, err := os.Lstat(tdir); err == nil {
		return Template{}, fmt.Errorf("create template %q: %w", name, ErrExists)
	}
	spec := o.Spec
	if spec.Rootfs == nil || spec.Rootfs.Path == "" {
		return Template{}, fmt.Errorf("%w: template %q: a build needs a root filesystem to boot", sandbox.ErrInvalidSpec, name)
	}
	if spec.Rootfs.ReadOnly {
		return Template{}, fmt.Errorf("%w: template %q: the root filesystem is read-only: setup commands need a writable one", sandbox.ErrInvalidSpec, name)
	}
	for i, c := range o.Run {
		if strings.TrimSpace(c) == "" {
			return Template{}, fmt.Errorf("%w: template %q: setup command %d is empty: give a command", sandbox.ErrInvalidSpec, name, i+1)
		}
	}
	if o.DiskSize < 0 {
		return Template{}, fmt.Errorf("%w: template %q: disk size %d", sandbox.ErrInvalidSpec, name, o.DiskSize)
	}
	fc, err := sandbox.FindFirecracker(spec.Firecracker)
	if err != nil {
		return Template{}, err
	}
	// Checked before anything is made. Its clones reach the agent on any
	// release: each binds a vsock socket of its own (the snapshot names it
	// relative to the sandbox's directory).
	if _, err := vmm.ExecutableRelease(ctx, fc); err != nil {
		return Template{}, fmt.Errorf("%w: %s: %w", sandbox.ErrInvalidSpec, fc, err)
	}
	spec.Firecracker = fc
	spec.Agent = true
	spec.ID = ""
	spec.Labels = maps.Clone(spec.Labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[LabelBuild] = name
	if owner := ownerLabel(); owner != "" {
		spec.Labels[LabelBuildOwner] = owner
	}

	created, err := s.rt.Create(ctx, spec, sandbox.CreateOptions{
		CopyRootfs: func(ctx context.Context, src, dst string) error {
			if err := image.Clone(src, dst); err != nil {
				return err
			}
			if o.DiskSize > 0 {
				return image.Grow(ctx, dst, o.DiskSize)
			}
			return nil
		},
	})
	if err != nil {
		return Template{}, fmt.Errorf("create template %q: %w", name, err)
	}
	id := created.ID
	defer func() {
		// The builder goes in all cases: its guest lives on in the
		// template, or the build failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := s.rt.Remove(rctx, id, true); rerr != nil && !errors.Is(rerr, sandbox.ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("remove the builder sandbox %q: %w", id, rerr))
		}
	}()
	s.log.Debug("booting template builder", "template", name, "sandbox", id)
	if _, err := s.rt.Start(ctx, id); err != nil {
		return Template{}, fmt.Errorf("create template %q: boot the builder: %w", name, err)
	}
	for i, c := range o.Run {
		if err := s.setup(ctx, id, i+1, c, o.Output); err != nil {
			return Template{}, fmt.Errorf("create template %q: %w", name, err)
		}
	}
	tpl, err := s.create(ctx, name, id, Options{Stop: true}, func(t *Template) {
		t.Image, t.ImageRef, t.Setup = o.Image, o.ImageRef, o.Run
	})
	if err != nil {
		return Template{}, err
	}
	return tpl, nil
}

// setup runs setup command step (cmd) in the builder id.
func (s *Store) setup(ctx context.Context, id string, step int, cmd string, out io.Writer) error {
	s.log.Debug("running setup command", "sandbox", id, "step", step, "command", cmd)
	tail := &tailBuffer{max: setupTail}
	var w io.Writer = tail
	if out != nil {
		w = io.MultiWriter(tail, &lockedWriter{w: out})
	}
	p, err := s.rt.Exec(ctx, id, sandbox.ExecRequest{Args: []string{"/bin/sh", "-c", cmd}, Stdout: w, Stderr: w})
	if err != nil {
		var ee *agent.ExecError
		if errors.As(err, &ee) {
			fmt.Fprintf(w, "%v\n", err)
			return &SetupError{Step: step, Command: cmd, ExitCode: ee.ExitCode(), Output: tail.bytes(), Shown: out != nil}
		}
		return fmt.Errorf("setup command %d (%q): %w", step, cmd, err)
	}
	defer p.Close()
	code, err := p.Wait(ctx)
	if err != nil {
		return fmt.Errorf("setup command %d (%q): %w", step, cmd, err)
	}
	if code != 0 {
		return &SetupError{Step: step, Command: cmd, ExitCode: code, Output: tail.bytes(), Shown: out != nil}
	}
	return nil
}
