package vmm

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Command is the command line of a VMM process, as a Spawner is asked to
// start it: Firecracker's, or the jailer's with Firecracker's after "--".
type Command struct {
	Path string
	Args []string
	// Env is added to the spawning process's environment.
	Env []string
	// Dir is the working directory.
	Dir string
	// NetNS, when set, is the network namespace (a name or path) to start
	// the process in.
	NetNS string
	// PIDFile, when set, is where a jailer started with --new-pid-ns writes
	// the PID of the Firecracker it forks: that process is the VMM.
	PIDFile string
}

// Spawned is a VMM process a Spawner started.
type Spawned struct {
	// PID and StartTime (clock ticks since boot, as /proc shows it) name
	// the VMM: the Firecracker process, not a jailer that forked it.
	PID       int
	StartTime uint64
	// Exited, when not nil, receives how the VMM ended, once it has, or is
	// closed when that cannot be known (the spawner let go of it). The
	// Machine sees a VMM exited once the process is gone and Exited has
	// delivered or been closed. Nil: the exit status is unknown.
	Exited <-chan SpawnedExit
}

// SpawnedExit is how a spawned VMM ended.
type SpawnedExit struct {
	Status ExitStatus
	// Stderr is the tail of the process's stderr, for error messages.
	Stderr string
}

// Spawner starts a Machine's VMM process in place of the Machine, for a
// caller whose VMM must be another process's child (a monitor that
// outlives the caller). It returns once the process runs, or fails within
// ctx; the Machine then waits for the API socket and configures the VMM as
// it would its own child, and watches the process through a pidfd. The
// console goes where the spawner sends it: Config.Console is not used, and
// Config.ConsolePath names the file the spawner writes it to, which the
// Machine only reads (for Config.WaitConsole).
type Spawner func(ctx context.Context, cmd Command) (Spawned, error)

// WithSpawner hands the spawn of the VMM process to s (see Spawner).
func WithSpawner(s Spawner) Option {
	return func(o *options) { o.spawner = s }
}

// spawnElsewhere has the Machine's spawner start spec, and returns the
// process to watch.
func (m *Machine) spawnElsewhere(ctx context.Context, spec spawnSpec) (*process, error) {
	cmd := Command{Path: spec.path, Args: spec.args, Env: spec.env, Dir: spec.dir, NetNS: spec.netns}
	if m.cfg.Jailer != nil && m.cfg.Jailer.NewPIDNS {
		m.mu.Lock()
		cmd.PIDFile = m.jail.layout.PIDFile
		m.mu.Unlock()
	}
	s, err := m.opts.spawner(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("spawn %s: %w", spec.path, err)
	}
	return watchSpawned(s)
}

// watchSpawned returns a process for s, which is not our child: a
// goroutine waits on its pidfd and then on s.Exited.
func watchSpawned(s Spawned) (*process, error) {
	if s.PID <= 0 {
		return nil, fmt.Errorf("spawner reported pid %d", s.PID)
	}
	p := &process{pid: s.PID, startTime: s.StartTime, stderr: newTailBuffer(stderrTailLines), done: make(chan struct{}), dead: make(chan struct{})}
	fd, err := kunix.OpenPidfd(s.PID)
	switch {
	case err == nil:
		if st, serr := kunix.ProcessStartTime(s.PID); serr != nil || st != s.StartTime {
			// Gone and reaped already, its PID maybe reused.
			fd.Close()
			fd = nil
		}
	case kunix.IsNoProcess(err):
		fd = nil // gone and reaped already
	default:
		return nil, fmt.Errorf("watch firecracker (pid %d): %w", s.PID, err)
	}
	if fd != nil {
		p.pidfd = fd
	} else {
		p.gone = true
	}
	go func() {
		if fd != nil {
			if fd.Wait() == nil { // on exit, or once Release closes the pidfd
				close(p.dead)
			}
		} else {
			close(p.dead)
		}
		p.exit = ExitStatus{Code: -1, Unknown: true, Time: time.Now()}
		if s.Exited != nil {
			if e, ok := <-s.Exited; ok {
				p.exit = e.Status
				_, _ = io.WriteString(p.stderr, e.Stderr)
			}
		}
		if fd != nil {
			fd.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// followConsole feeds w with what is appended to the file path from offset
// on, until the marker is found, stop is closed, or exited is closed (then
// after a last read, telling w the stream ended). A file replaced by a
// shorter one (a rotated log) is read from its start.
func followConsole(path string, offset int64, w *consoleWatch, stop, exited <-chan struct{}) {
	buf := make([]byte, 32<<10)
	delay := 100 * time.Microsecond
	readNew := func() {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Size() < offset {
			offset = 0
		}
		for {
			n, err := f.ReadAt(buf, offset)
			if n > 0 {
				offset += int64(n)
				w.feed(buf[:n])
				delay = 100 * time.Microsecond
			}
			if err != nil || n == 0 {
				return
			}
		}
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		readNew()
		select {
		case <-w.found:
			return
		case <-stop:
			return
		case <-exited:
			readNew()
			w.close()
			return
		case <-t.C:
		}
		if delay < 2*time.Millisecond {
			delay *= 2
		}
		t.Reset(delay)
	}
}

// fileSize is the size of the file at path, 0 if there is none.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
