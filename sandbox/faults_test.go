package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// The fault tests break things at awkward moments and check that each ends
// with a clear error or a correct status, and that GC then leaves nothing:
// no sandbox, no file but the root's own hidden ones, no VMM or monitor.

// modes are the Firecrackers a scenario runs against.
var modes = []struct {
	name string
	real bool
}{{"fake", false}, {"real", true}}

// newFaultRuntime is newRuntime, plus a check at cleanup that no process
// (VMM, monitor) mentioning the state root outlived the test; such a
// process is killed and reported.
func newFaultRuntime(t *testing.T, real bool) (*Runtime, string) {
	t.Helper()
	r, fc := newRuntime(t, real)
	t.Cleanup(func() { killStrays(t, r.Root()) })
	return r, fc
}

// killStrays fails the test for each live process whose command line,
// environment or working directory names root, and kills it.
func killStrays(t *testing.T, root string) {
	t.Helper()
	for _, p := range processesUnder(root) {
		t.Errorf("process left running: %s", p.desc)
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

type strayProc struct {
	pid  int
	desc string
}

// processesUnder lists the live processes (not this one, not zombies) that
// name root in their command line, environment or working directory.
func processesUnder(root string) []strayProc {
	found, _ := kunix.ProcessesUsingDir(root)
	out := make([]strayProc, 0, len(found))
	for _, p := range found {
		out = append(out, strayProc{p.PID, fmt.Sprintf("pid %d %q (cwd %s)", p.PID, strings.Join(p.Args, " "), p.Cwd)})
	}
	return out
}

// gcLeavesNothing runs GC and checks that no sandbox, file or process is
// left under the runtime's root.
func gcLeavesNothing(t *testing.T, r *Runtime) {
	t.Helper()
	ctx := context.Background()
	if _, err := r.GC(ctx); err != nil {
		t.Errorf("gc: %v", err)
	}
	infos, err := r.List(ctx, ListOptions{})
	if err != nil {
		t.Errorf("list after gc: %v", err)
	}
	for _, in := range infos {
		if in.Status != Created {
			t.Errorf("after gc: sandbox %s (%s) is left", in.ID, in.Status)
		}
	}
	for _, p := range processesUnder(r.Root()) {
		t.Errorf("after gc: process still running: %s", p.desc)
	}
}

// mustStart creates and starts sandbox id running a halting guest.
func mustStart(t *testing.T, r *Runtime, spec Spec) Info {
	t.Helper()
	ctx := context.Background()
	if _, err := r.Create(ctx, spec, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	in, err := r.Start(sctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// stopWithin stops sandbox id with deadline d and checks that Stop returned
// nil within d (plus a little) and that the sandbox is exited.
func stopWithin(t *testing.T, r *Runtime, id string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	began := time.Now()
	err := r.Stop(ctx, id)
	took := time.Since(began)
	if took > d+time.Second {
		t.Errorf("stop took %v, its deadline was %v", took, d)
	}
	if err != nil {
		t.Errorf("stop: %v (after %v)", err, took)
	}
	in, err := r.Inspect(context.Background(), id)
	if err != nil {
		t.Errorf("inspect after stop: %v", err)
	} else if in.Status != Exited && in.Status != Created {
		t.Errorf("after stop: status %s, want exited (or created, for one never started)", in.Status)
	}
}

// waitNoProcesses waits up to 2 s for every process naming root to be gone
// (a monitor exits just after its report) and fails the test otherwise.
func waitNoProcesses(t *testing.T, what, root string) {
	t.Helper()
	var ps []strayProc
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ps = processesUnder(root); len(ps) == 0 {
			return
		}
	}
	t.Errorf("%s: processes left: %v", what, ps)
}

// TestFaultVMMDiesDuringStart makes the fake VMM exit at its Nth API
// request, for every N that falls inside Start, and at its very start.
func TestFaultVMMDiesDuringStart(t *testing.T) {
	r, fc := newFaultRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "dies during start")
	failed := 0
	for n := 0; n <= 30; n++ {
		settings := fmt.Sprintf(`{"exit_at":%d}`, n)
		if n == 0 {
			settings = `{"die_at_start":true}`
		}
		t.Setenv("FAKEFC", settings)
		id := fmt.Sprintf("dies%d", n)
		if _, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc, MemoryMiB: 16, Placeholders: 1}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		began := time.Now()
		_, err := r.Start(sctx, id)
		cancel()
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("%s: start took %v", settings, took)
		}
		if err == nil {
			// The VMM outlived Start: it dies at its next request, which
			// Stop's may be. Stop must still end it cleanly.
			stopWithin(t, r, id, 5*time.Second)
			if err := r.Remove(ctx, id, false); err != nil {
				t.Errorf("%s: remove: %v", settings, err)
			}
			break
		}
		failed++
		if !strings.Contains(err.Error(), "exit") {
			t.Errorf("%s: start error %q does not say the VMM exited", settings, err)
		}
		in, ierr := r.Inspect(ctx, id)
		if ierr != nil || in.Status != Exited || in.Exit == nil || in.Exit.Error == "" || in.PID != 0 || in.MonitorPID != 0 {
			t.Errorf("%s: after a failed start: %+v, %v", settings, in, ierr)
		}
		if _, err := os.Stat(in.APISocket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: API socket left after a failed start: %v", settings, err)
		}
		waitNoProcesses(t, settings+": after a failed start", r.Root())
	}
	if failed < 4 {
		t.Errorf("only %d start phases were hit; want at least 4", failed)
	}
	gcLeavesNothing(t, r)
}

// TestFaultProcessKills kills or stops the VMM or the monitor of a running
// sandbox and checks that the runtime reports it and cleans up.
func TestFaultProcessKills(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *Runtime, in Info)
	}{
		{"vmm-sigkill", func(t *testing.T, r *Runtime, in Info) {
			syscall.Kill(in.PID, syscall.SIGKILL)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			exit, err := r.Wait(ctx, in.ID)
			if err != nil || exit == nil || exit.Signal != "killed" {
				t.Errorf("wait after SIGKILL of the VMM: %+v, %v", exit, err)
			}
		}},
		{"vmm-sigstop", func(t *testing.T, r *Runtime, in Info) {
			// A stopped VMM answers nothing; Stop must still end it in time.
			if err := syscall.Kill(in.PID, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopWithin(t, r, in.ID, 3*time.Second)
		}},
		{"monitor-sigkill", func(t *testing.T, r *Runtime, in Info) {
			ctx := context.Background()
			syscall.Kill(in.MonitorPID, syscall.SIGKILL)
			waitStatus(t, r, in.ID, Orphaned)
			// GC keeps an orphan: its VMM runs.
			if removed, err := r.GC(ctx); err != nil || len(removed) != 0 {
				t.Errorf("gc with an orphan: removed %v, %v", removed, err)
			}
			if err := r.Pause(ctx, in.ID); err != nil {
				t.Errorf("pause an orphan: %v", err)
			}
			if err := r.Resume(ctx, in.ID); err != nil {
				t.Errorf("resume an orphan: %v", err)
			}
			stopWithin(t, r, in.ID, 5*time.Second)
			if info, _ := r.Inspect(ctx, in.ID); info.Exit == nil {
				t.Errorf("stopped orphan has no exit record")
			}
		}},
		{"monitor-then-vmm-sigkill", func(t *testing.T, r *Runtime, in Info) {
			syscall.Kill(in.MonitorPID, syscall.SIGKILL)
			waitStatus(t, r, in.ID, Orphaned)
			syscall.Kill(in.PID, syscall.SIGKILL)
			waitStatus(t, r, in.ID, Exited)
			// Nothing records this exit; Stop settles the books.
			stopWithin(t, r, in.ID, 5*time.Second)
		}},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				r, fc := newFaultRuntime(t, mode.real)
				in := mustStart(t, r, Spec{ID: "victim", Kernel: haltGuest(t, "victim up"), Firecracker: fc, MemoryMiB: 32})
				tt.run(t, r, in)
				gcLeavesNothing(t, r)
			})
		}
	}
}

// waitStatus waits up to 5 s for sandbox id to show status want.
func waitStatus(t *testing.T, r *Runtime, id string, want Status) {
	t.Helper()
	var in Info
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var err error
		if in, err = r.Inspect(context.Background(), id); err == nil && in.Status == want {
			return
		}
	}
	t.Fatalf("sandbox %s: status %s, want %s", id, in.Status, want)
}

// envCallerHelper makes the test binary act as a caller of the runtime that
// gets killed (see TestFaultCallerHelper).
const envCallerHelper = "KINDLING_TEST_CALLER_HELPER"

// callerJob is what the caller helper does.
type callerJob struct {
	Root, ID, Kernel, Firecracker string
}

// TestFaultCallerHelper is not a test: it is the body of the helper process
// of TestFaultCallerKilled, which calls Create and Start and reports its
// progress on stdout until it is killed.
func TestFaultCallerHelper(t *testing.T) {
	env := os.Getenv(envCallerHelper)
	if env == "" {
		t.Skip("only runs as TestFaultCallerKilled's helper process")
	}
	check := func(what string, err error) {
		if err != nil {
			fmt.Println(what+":", err)
			os.Exit(2)
		}
	}
	var job callerJob
	check("bad job", json.Unmarshal([]byte(env), &job))
	ctx := context.Background()
	r, err := Open(job.Root)
	check("open", err)
	fmt.Println("ready")
	_, err = r.Create(ctx, Spec{ID: job.ID, Kernel: job.Kernel, Firecracker: job.Firecracker, MemoryMiB: 32}, CreateOptions{})
	check("create", err)
	fmt.Println("created\nstarting")
	_, err = r.Start(ctx, job.ID)
	check("start", err)
	fmt.Println("started")
	select {} // wait to be killed
}

// TestFaultCallerKilled SIGKILLs a process that is creating and starting a
// sandbox, at several points, and checks the sandbox can be inspected,
// stopped and collected afterwards.
func TestFaultCallerKilled(t *testing.T) {
	for _, mode := range modes {
		for _, at := range []string{"ready", "created", "starting", "started"} {
			t.Run(mode.name+"/at-"+at, func(t *testing.T) {
				r, fc := newFaultRuntime(t, mode.real)
				if !mode.real {
					// Slow each API answer so that "starting" is mid-start.
					t.Setenv("FAKEFC", `{"delay":"20ms"}`)
				}
				job, _ := json.Marshal(callerJob{Root: r.Root(), ID: "orphan", Kernel: haltGuest(t, "caller died"), Firecracker: fc})
				cmd := exec.Command(os.Args[0], "-test.run=^TestFaultCallerHelper$", "-test.count=1")
				cmd.Env = append(os.Environ(), envCallerHelper+"="+string(job))
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				sc := bufio.NewScanner(out)
				var seen []string
				for sc.Scan() {
					seen = append(seen, sc.Text())
					if sc.Text() == at {
						break
					}
				}
				if at == "starting" {
					time.Sleep(30 * time.Millisecond)
				}
				cmd.Process.Kill()
				cmd.Wait()
				if len(seen) == 0 || seen[len(seen)-1] != at {
					t.Fatalf("helper said %q, never %q", seen, at)
				}

				ctx := context.Background()
				in, err := r.Inspect(ctx, "orphan")
				if errors.Is(err, ErrNotFound) {
					gcLeavesNothing(t, r)
					return // killed before its create was recorded
				}
				if err != nil {
					t.Fatalf("inspect after the caller died: %v", err)
				}
				if in.Status == Starting {
					// The monitor goes on without its caller.
					for deadline := time.Now().Add(10 * time.Second); in.Status == Starting && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
						in, _ = r.Inspect(ctx, "orphan")
					}
				}
				switch in.Status {
				case Created, Running, Exited:
				default:
					t.Errorf("after the caller died: status %s", in.Status)
				}
				stopWithin(t, r, "orphan", 5*time.Second)
				if err := r.Remove(ctx, "orphan", false); err != nil {
					t.Errorf("remove: %v", err)
				}
				gcLeavesNothing(t, r)
			})
		}
	}
}

// TestFaultNoSocket runs a VMM that never opens its API socket: Start
// fails within its context and leaves nothing.
func TestFaultNoSocket(t *testing.T) {
	r, fc := newFaultRuntime(t, false)
	t.Setenv("FAKEFC", `{"no_socket":true}`)
	ctx := context.Background()
	if _, err := r.Create(ctx, Spec{ID: "nosock", Kernel: haltGuest(t, "x"), Firecracker: fc, MemoryMiB: 16}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const limit = 1500 * time.Millisecond
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	began := time.Now()
	_, err := r.Start(sctx, "nosock")
	if took := time.Since(began); took > limit+time.Second {
		t.Errorf("start took %v, its deadline was %v", took, limit)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("start = %v; want a deadline error", err)
	}
	in, err := r.Inspect(ctx, "nosock")
	if err != nil || in.Status != Exited || in.PID != 0 || in.MonitorPID != 0 {
		t.Errorf("after the start timed out: %+v, %v", in, err)
	}
	waitNoProcesses(t, "after the start timed out", r.Root())
	if err := r.Remove(ctx, "nosock", false); err != nil {
		t.Error(err)
	}
	gcLeavesNothing(t, r)
}

// TestFaultStaleSocket leaves a dead socket file at the API path before
// Start: it is removed and the start succeeds.
func TestFaultStaleSocket(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			r, fc := newFaultRuntime(t, mode.real)
			ctx := context.Background()
			in, err := r.Create(ctx, Spec{ID: "stale", Kernel: haltGuest(t, "stale up"), Firecracker: fc, MemoryMiB: 32}, CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			leaveDeadSocket(t, in.APISocket)
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			in, err = r.Start(sctx, "stale")
			if err != nil {
				t.Fatalf("start over a stale socket: %v", err)
			}
			waitConsole(t, in, "stale up")
			stopWithin(t, r, "stale", 5*time.Second)
			if err := r.Remove(ctx, "stale", false); err != nil {
				t.Error(err)
			}
			gcLeavesNothing(t, r)
		})
	}
}

// leaveDeadSocket binds a Unix socket at path and closes it without
// removing the file, as a crashed VMM would.
func leaveDeadSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// TestFaultAPIConnectionsHeld holds all 10 of Firecracker's API
// connections: Pause and Stop give a clear error or succeed within their
// deadlines, and once the connections are released Stop works.
func TestFaultAPIConnectionsHeld(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			r, fc := newFaultRuntime(t, mode.real)
			ctx := context.Background()
			in := mustStart(t, r, Spec{ID: "busy", Kernel: haltGuest(t, "busy up"), Firecracker: fc, MemoryMiB: 32})
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range 10 {
				conns = append(conns, dialRaw(t, in.APISocket))
			}
			const limit = 2 * time.Second
			pctx, cancel := context.WithTimeout(ctx, limit)
			began := time.Now()
			err := r.Pause(pctx, "busy")
			cancel()
			took := time.Since(began)
			if took > limit+time.Second {
				t.Errorf("pause took %v, its deadline was %v", took, limit)
			}
			t.Logf("pause with every API connection held: %v after %v", err, took)
			if err != nil && !strings.Contains(err.Error(), "pause sandbox") {
				t.Errorf("pause error %q does not say what failed", err)
			}
			// Stop may fail as clearly, in time; once the connections are
			// free it must work. (Better: it would stop the VMM with
			// signals anyway; see reliability finding F1.)
			const stopLimit = 3 * time.Second
			sctx, cancel := context.WithTimeout(ctx, stopLimit)
			began = time.Now()
			err = r.Stop(sctx, "busy")
			cancel()
			if took := time.Since(began); took > stopLimit+time.Second {
				t.Errorf("stop took %v, its deadline was %v", took, stopLimit)
			}
			t.Logf("stop with every API connection held: %v", err)
			if err != nil && !strings.Contains(err.Error(), "stop sandbox") {
				t.Errorf("stop error %q does not say what failed", err)
			}
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			if err != nil {
				// Firecracker may see the closes after the next connection.
				waitAPIAnswers(t, in.APISocket)
			}
			stopWithin(t, r, "busy", 3*time.Second)
			if err := r.Remove(ctx, "busy", false); err != nil {
				t.Error(err)
			}
			gcLeavesNothing(t, r)
		})
	}
}

// waitAPIAnswers waits up to 2 s until the API at sock answers GET / with
// 200 OK.
func waitAPIAnswers(t *testing.T, sock string) {
	t.Helper()
	var status string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c := dialRaw(t, sock)
		c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		n := 0
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")); err == nil {
			n, _ = c.Read(buf)
		}
		c.Close()
		if status, _, _ = strings.Cut(string(buf[:n]), "\r\n"); strings.HasPrefix(status, "HTTP/1.1 200") {
			return
		}
	}
	t.Fatalf("API at %s never answered again after its connections were freed; last: %q", sock, status)
}

// dialRaw opens a Unix stream connection to path.
func dialRaw(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFaultVMMKilledDuringStart SIGKILLs the VMM at several delays after
// it appears, so that with a real Firecracker (which has no fault hooks)
// the kill lands in different phases of Start: each start fails with a
// clear error or succeeds, and nothing is left.
func TestFaultVMMKilledDuringStart(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			r, fc := newFaultRuntime(t, mode.real)
			ctx := context.Background()
			kernel := haltGuest(t, "killed during start")
			for i, delay := range []time.Duration{0, 100 * time.Microsecond, 300 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond} {
				id := fmt.Sprintf("k%d", i)
				in, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc, MemoryMiB: 32}, CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				sock := in.APISocket
				stop := make(chan struct{})
				killed := make(chan bool, 1)
				go func() { killed <- killWhenSeen(sock, delay, stop) }()
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err = r.Start(sctx, id)
				cancel()
				close(stop)
				hit := <-killed
				t.Logf("kill %v after spawn (hit %v): start = %v", delay, hit, err)
				if err != nil && !strings.Contains(err.Error(), "firecracker") && !strings.Contains(err.Error(), "killed") {
					t.Errorf("start error %q does not say what happened to the VMM", err)
				}
				if hit {
					waitStatus(t, r, id, Exited)
				}
				stopWithin(t, r, id, 5*time.Second)
				waitNoProcesses(t, id, r.Root())
				if err := r.Remove(ctx, id, false); err != nil {
					t.Errorf("remove %s: %v", id, err)
				}
			}
			gcLeavesNothing(t, r)
		})
	}
}

// killWhenSeen waits for a process whose command line holds sock, then,
// after delay, SIGKILLs it. It gives up when stop is closed and reports
// whether it killed one.
func killWhenSeen(sock string, delay time.Duration, stop <-chan struct{}) bool {
	for {
		select {
		case <-stop:
			return false
		default:
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !bytes.Contains(cmdline, []byte("--api-sock\x00"+sock+"\x00")) {
				continue
			}
			time.Sleep(delay)
			return syscall.Kill(pid, syscall.SIGKILL) == nil
		}
	}
}

// TestFaultSignalAfterPidfdClosed pins down a race kindling-churn hit 2
// times in 938 real stop cycles ("stop: send SIGCONT: pidfd send signal
// continued: use of closed file"): vmm's watcher closes an attached VMM's
// pidfd as soon as the VMM exits, so Stop's SIGCONT right after SIGTERM can
// find it closed. vmm treats os.ErrClosed as "process gone", but the error
// Pidfd.Signal returns for a closed pidfd does not match it.
func TestFaultSignalAfterPidfdClosed(t *testing.T) {
	testutil.CheckLeaks(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	fd, err := kunix.OpenPidfd(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	fd.Close()
	if err := fd.Signal(kunix.SIGCONT); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Signal on a closed pidfd = %v; want an error matching os.ErrClosed", err)
	}
}
