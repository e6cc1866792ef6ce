package monitor

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// dnsReadyTimeout bounds the wait for the sandbox's DNS forwarder before
// the start is reported: a forwarder that is not up by then is logged and
// the sandbox runs without it.
const dnsReadyTimeout = 10 * time.Second

// dnsStopTimeout bounds a DNS helper's exit after SIGTERM; it is killed
// after that.
const dnsStopTimeout = 5 * time.Second

// startDNS starts the sandbox's DNS forwarder when the plan asks for one,
// beside the VMM's start: in this process through Hooks.StartDNS, else as
// the plan's helper program run for it. ready waits (bounded) until it is
// up; stop ends it and waits for that, and must run before the sandbox's
// network is torn down. Both do nothing for a sandbox without one.
func (mon *monitor) startDNS() (ready, stop func()) {
	if !mon.plan.DNS {
		return func() {}, func() {}
	}
	if mon.hooks.StartDNS != nil {
		return mon.startDNSHere()
	}
	return mon.startDNSHelper()
}

// startDNSHere runs the forwarder in this process: binding its sockets
// takes a fraction of a millisecond, a guest's boot far longer.
func (mon *monitor) startDNSHere() (ready, stop func()) {
	started := make(chan struct{})
	var stopFwd func()
	go func() {
		defer close(started)
		stopFwd = mon.hooks.StartDNS(mon.st, mon.id, mon.log)
	}()
	var once sync.Once
	return func() { <-started }, func() {
		once.Do(func() {
			<-started
			if stopFwd != nil {
				stopFwd()
			}
		})
	}
}

// startDNSHelper runs the plan's helper program (the full kindling, which
// links the network package this one does not) as a child for the VMM's
// life, with EnvRelease=dns. It runs in the sandbox's directory with the
// monitor's argv[0], so that it is found and ended with the sandbox's
// processes from the host, and it gets SIGTERM if the monitor dies.
func (mon *monitor) startDNSHelper() (ready, stop func()) {
	nothing := func() {}
	fail := func(err error) (func(), func()) {
		// The guest has no resolver; everything else works.
		mon.log.Error("DNS forwarder", "err", err)
		return nothing, nothing
	}
	if mon.plan.Helper == "" {
		return fail(errors.New("the sandbox has a slot network and its starter named no program to run its DNS forwarder"))
	}
	dir, err := mon.st.Dir(mon.id)
	if err != nil {
		return fail(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(mon.plan.Helper)
	cmd.Args = []string{Arg0, mon.id, HelperDNS}
	cmd.Env = append(os.Environ(), EnvRoot+"="+mon.st.Root(), EnvID+"="+mon.id, EnvRelease+"="+HelperDNS)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	done := make(chan struct{})
	var waitErr error // set before done is closed
	go func() {
		// The death signal follows the thread that started the child:
		// this goroutine keeps that thread for the child's whole life.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(done)
			return
		}
		started <- nil
		waitErr = cmd.Wait()
		close(done)
	}()
	err = <-started
	pw.Close()
	if err != nil {
		pr.Close()
		return fail(err)
	}
	up := make(chan struct{})
	go func() {
		// The helper closes its end once the forwarder is up.
		io.Copy(io.Discard, pr)
		pr.Close()
		close(up)
	}()
	ready = func() {
		select {
		case <-up:
		case <-done:
		case <-time.After(dnsReadyTimeout):
			mon.log.Error("DNS forwarder", "err", "not up after "+dnsReadyTimeout.String())
		}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			killed := false
			if err := cmd.Process.Signal(syscall.SIGTERM); err == nil {
				select {
				case <-done:
				case <-time.After(dnsStopTimeout):
					cmd.Process.Kill()
					killed = true
					<-done
				}
			} else {
				<-done
			}
			if waitErr != nil {
				mon.log.Error("DNS forwarder", "err", waitErr, "killed", killed)
			}
		})
	}
	return ready, stop
}
