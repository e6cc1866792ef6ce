package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/internal/store"
	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/internal/vmmproc"
	"github.com/kindling-vm/kindling/vmm"
)

// startReport is one report of a monitor (see monitor.Report).
type startReport = monitor.Report

// monitorProc is a monitor process this runtime started.
type monitorProc struct {
	cmd  *exec.Cmd
	ref  procRef
	done chan struct{} // closed once cmd.Wait returned
	// plan is the write end of the monitor's stdin, verdict of its verdict
	// pipe, reports the read end of its report pipe; each nil once closed
	// (or handed to the report reader).
	plan, verdict, reports *os.File
}

// spawnMonitor gives sandbox id, in dir, its monitor: a spare one claimed
// (WithSpareMonitors), else one started for it, detached in its own
// session, with its output in the sandbox's monitor log, a pipe on its
// stdin for its plan, one for its reports and one for the verdict.
func (r *Runtime) spawnMonitor(dir string, rec *record) (*monitorProc, error) {
	if m := r.claimSpare(rec.ID); m != nil {
		return m, nil
	}
	logf, err := store.OpenInDir("sandbox directory", dir, monitorLogName, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open monitor log: %w", err)
	}
	defer logf.Close()
	env := []string{monitor.EnvRoot + "=" + r.st.Root(), monitor.EnvID + "=" + rec.ID}
	return r.startMonitor([]string{monitorArg0, rec.ID}, env, dir, logf)
}

// startMonitor starts a monitor process with args, the environment
// extended by env, in dir, with its output to out (nil: /dev/null).
func (r *Runtime) startMonitor(args, env []string, dir string, out *os.File) (_ *monitorProc, err error) {
	var theirs, ours []*os.File
	defer func() {
		for _, f := range theirs {
			f.Close()
		}
		if err != nil {
			for _, f := range ours {
				f.Close()
			}
		}
	}()
	pipe := func() (r, w *os.File) {
		if err != nil {
			return nil, nil
		}
		r, w, err = os.Pipe()
		if err != nil {
			err = fmt.Errorf("spawn monitor: %w", err)
		}
		return r, w
	}
	planR, planW := pipe()
	repR, repW := pipe()
	verR, verW := pipe()
	if err != nil {
		for _, f := range []*os.File{planR, planW, repR, repW, verR, verW} {
			if f != nil {
				f.Close()
			}
		}
		return nil, err
	}
	theirs = []*os.File{planR, repW, verR}
	ours = []*os.File{planW, repR, verW}
	cmd := exec.Command(r.monitorExe)
	cmd.Args = args
	cmd.Env = withOneProc(append(monitorEnv(os.Environ()), env...))
	cmd.Dir = dir
	cmd.Stdin = planR
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.ExtraFiles = []*os.File{repW, verR} // monitor.ReportFD, monitor.VerdictFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spawn monitor %s: %w", r.monitorExe, err)
	}
	m := &monitorProc{cmd: cmd, done: make(chan struct{}), plan: planW, reports: repR, verdict: verW}
	pid := cmd.Process.Pid
	// The monitor outlives this call; reap it whenever it exits so that a
	// long-lived process embedding the runtime collects no zombies.
	go func() {
		cmd.Wait()
		close(m.done)
		r.childMu.Lock()
		if r.children[pid] == m {
			delete(r.children, pid)
		}
		r.childMu.Unlock()
	}()
	st, err := kunix.ProcessStartTime(cmd.Process.Pid)
	if err != nil {
		m.kill()
		return nil, fmt.Errorf("spawn monitor: %w", err)
	}
	m.ref = procRef{PID: pid, StartTime: st}
	r.childMu.Lock()
	select {
	case <-m.done: // reaped already
	default:
		r.children[pid] = m
	}
	r.childMu.Unlock()
	return m, nil
}

// withOneProc adds GOMAXPROCS=1 to a monitor's environment env, unless
// it passes GOMAXPROCS on already: a monitor runs a handful of goroutines
// that mostly wait, and with one P its Go runtime starts fewer threads and
// has no idle P looking for work each time one wakes, which cuts the CPU
// time of its start. The monitor takes the variable out of its own
// environment (monitor.EnvOneProc) before it runs the VMM or a helper.
func withOneProc(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return env
		}
	}
	return append(env, "GOMAXPROCS=1", monitor.EnvOneProc+"=1")
}

// kill ends the monitor at once and waits until it is reaped.
func (m *monitorProc) kill() {
	m.cmd.Process.Kill()
	<-m.done
	m.closePipes()
}

func (m *monitorProc) closePipes() {
	for _, f := range []**os.File{&m.plan, &m.verdict, &m.reports} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// maxReportSize bounds a monitor's reports.
const maxReportSize = 64 << 10

// reportWait bounds a start when the caller's context has no deadline: the
// monitor gives up its start after startTimeout, so a start that has not
// ended by then never will (the monitor is stopped — SIGSTOP — or wedged).
// (A variable for the tests.)
var reportWait = startTimeout + 15*time.Second

// errNoReport: the start did not end within reportWait.
var errNoReport = errdefs.New(errdefs.ErrUnavailable, "no start report from the monitor")

// errNoMonitorReport: the monitor's reports ended before the one awaited.
var errNoMonitorReport = errors.New("the monitor exited without a report (see its log, monitor.log, in the sandbox directory)")

// reportStream sorts a monitor's reports: the spawn report, the VMM's
// exit before the verdict, and the final one. Each channel is closed
// once the reports end.
type reportStream struct {
	spawn  chan startReport
	exited chan vmm.SpawnedExit
	final  chan startReport
}

// readReports reads the monitor's reports until they end.
func (m *monitorProc) readReports() *reportStream {
	s := &reportStream{spawn: make(chan startReport, 1), exited: make(chan vmm.SpawnedExit, 1), final: make(chan startReport, 1)}
	f := m.reports
	m.reports = nil
	go func() {
		defer f.Close()
		dec := json.NewDecoder(io.LimitReader(f, maxReportSize))
		for first := true; ; first = false {
			var rep startReport
			if err := dec.Decode(&rep); err != nil {
				break
			}
			switch {
			case first:
				s.spawn <- rep
			case rep.Exit != nil:
				e := vmm.SpawnedExit{Status: vmm.ExitStatus{Code: rep.Exit.Code, Signal: rep.Exit.Signal, Unknown: rep.Exit.Unknown, Time: time.Now()}, Stderr: rep.Stderr}
				select {
				case s.exited <- e:
				default:
				}
			default:
				select {
				case s.final <- rep:
				default:
				}
			}
		}
		close(s.spawn)
		close(s.exited)
		close(s.final)
	}()
	return s
}

// sendVerdict writes v to the monitor and closes the verdict pipe.
func (m *monitorProc) sendVerdict(v monitor.Verdict) error {
	if m.verdict == nil {
		return errors.New("the verdict was sent already")
	}
	b, err := json.Marshal(&v)
	if err == nil {
		_, err = m.verdict.Write(b)
	}
	m.verdict.Close()
	m.verdict = nil
	if err != nil {
		return fmt.Errorf("send the monitor its verdict: %w", err)
	}
	return nil
}

// boot has the monitor spawn the VMM and configures and boots it (or loads
// its snapshot) through the driver, then tells the monitor to keep it
// (commit) or to end it. It returns once the monitor has recorded the VM
// running, or the start has failed and the monitor has recorded that and
// exited (or been killed).
func (r *Runtime) boot(ctx context.Context, mon *monitorProc, bp *bootPlan, dir string) error {
	// Without a deadline of the caller's, a start must not hold the
	// caller forever on a monitor that never reports (D12).
	bctx := ctx
	noDeadline := false
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		bctx, cancel = context.WithTimeoutCause(ctx, reportWait, errNoReport)
		defer cancel()
		noDeadline = true
	}
	reports := mon.readReports()
	spawned := false
	spawner := func(sctx context.Context, c vmm.Command) (vmm.Spawned, error) {
		bp.plan.Command = vmmproc.Command{Path: c.Path, Args: c.Args, Env: c.Env, Dir: c.Dir, NetNS: c.NetNS, PIDFile: c.PIDFile}
		b, err := json.Marshal(&bp.plan)
		if err == nil {
			_, err = mon.plan.Write(b)
		}
		mon.plan.Close()
		mon.plan = nil
		if err != nil {
			return vmm.Spawned{}, fmt.Errorf("send the monitor its plan: %w", err)
		}
		spawned = true
		select {
		case rep, ok := <-reports.spawn:
			if !ok {
				return vmm.Spawned{}, errNoMonitorReport
			}
			if err := rep.Err(); err != nil {
				return vmm.Spawned{}, err
			}
			return vmm.Spawned{PID: rep.PID, StartTime: rep.StartTime, Exited: reports.exited}, nil
		case <-sctx.Done():
			return vmm.Spawned{}, fmt.Errorf("wait for the monitor's spawn report: %w", sctx.Err())
		}
	}
	opts := append(r.vmmOptions(), vmm.WithSpawner(spawner), vmm.WithPlaceholderAccess(bp.placeholders))
	var m *vmm.Machine
	var err error
	if bp.restore != nil {
		m, err = vmm.Restore(bctx, *bp.restore, opts...)
	} else if m, err = vmm.New(bp.cfg, opts...); err == nil {
		err = m.Start(bctx)
	}
	if err == nil {
		st := m.State()
		st.Config.ConsolePath = ""
		m.Release()
		var machine []byte
		if machine, err = json.Marshal(st); err == nil {
			err = mon.sendVerdict(monitor.Verdict{Commit: true, Machine: machine})
		}
		if err == nil {
			// Committed: the monitor records the VM running and reports at
			// once. The caller giving up now (Ctrl-C, its deadline) would
			// kill a VM that runs and is recorded so; it gets it instead,
			// to stop as it likes. Only a monitor that does not report
			// (stopped, say) ends the wait.
			fctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), reportWait, errNoReport)
			select {
			case rep, ok := <-reports.final:
				if !ok {
					rep.Error = errNoMonitorReport.Error()
				}
				if err = rep.Err(); err == nil {
					cancel()
					mon.closePipes()
					return nil
				}
			case <-fctx.Done():
				err = fmt.Errorf("wait for the monitor to record the VM running: %w", context.Cause(fctx))
			}
			cancel()
		}
	}
	if errors.Is(err, errNoReport) || (noDeadline && errors.Is(context.Cause(bctx), errNoReport)) {
		err = fmt.Errorf("%w within %v (was the monitor stopped with SIGSTOP, or is the host overloaded?): the start was aborted; "+
			"see monitor.log in the sandbox directory, and start the sandbox again, with a --timeout if the host is slow", errNoReport, reportWait)
	}
	return errors.Join(err, r.abort(ctx, mon, err, spawned, dir))
}

// abort ends a failed start: the monitor is told why (or, never given a
// plan, gets none) and awaited; one that does not end in time is killed,
// with anything still running for the sandbox. When no VMM was spawned,
// the monitor records nothing: the failure is recorded here.
func (r *Runtime) abort(ctx context.Context, mon *monitorProc, cause error, spawned bool, dir string) error {
	if mon.plan != nil {
		mon.plan.Close()
		mon.plan = nil
	}
	if mon.verdict != nil {
		_ = mon.sendVerdict(monitor.Verdict{Error: cause.Error(), Kind: monitor.KindCode(cause)})
	}
	// A stopped monitor must wake to end its VMM.
	mon.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-mon.done:
		mon.closePipes()
	case <-time.After(monitorExitWait):
		mon.kill()
	}
	ctx = context.WithoutCancel(ctx)
	// A monitor killed before it could end its VMM leaves it running: end
	// it, found from the host.
	err := killFound(ctx, dir)
	if spawned {
		return err
	}
	return errors.Join(err, r.recordFailedStart(ctx, dir, mon.ref, cause))
}

// recordFailedStart records the start of sandbox in dir by monitor ref as
// failed with cause, when the record still says that monitor is starting
// it, and releases the sandbox's host resources.
func (r *Runtime) recordFailedStart(ctx context.Context, dir string, ref procRef, cause error) error {
	id := filepath.Base(dir)
	l, err := r.st.Lock(ctx, id)
	if err != nil {
		return err
	}
	defer l.Unlock()
	var rec record
	if err := l.Load(&rec); err != nil {
		return err
	}
	if rec.Status != Starting || rec.Monitor == nil || *rec.Monitor != ref {
		return nil
	}
	rec.Exit = &Exit{Code: -1, At: time.Now().UTC(), Error: cause.Error()}
	return r.settle(ctx, l, &rec)
}
