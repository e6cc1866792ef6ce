package server

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// A Reaper starts the agent's processes (through the start function it is
// given) and waits for them. Wait is called once per process, from one
// goroutine.
type Reaper interface {
	Start(start func() (*os.Process, error)) (*os.Process, error)
	Wait(p *os.Process) (syscall.WaitStatus, error)
}

// DirectReaper waits for each process on its own (os.Process.Wait). It is
// right for an agent that is not PID 1: orphans are someone else's.
type DirectReaper struct{}

// Start calls start.
func (DirectReaper) Start(start func() (*os.Process, error)) (*os.Process, error) { return start() }

// Wait waits for p.
func (DirectReaper) Wait(p *os.Process) (syscall.WaitStatus, error) {
	st, err := p.Wait()
	if err != nil {
		return 0, err
	}
	ws, _ := st.Sys().(syscall.WaitStatus)
	return ws, nil
}

// SystemReaper reaps every child of the calling process, as PID 1 must:
// orphans re-parented to it are reaped and forgotten, and the processes the
// agent started are handed their status. Waiting for a process one by one
// (DirectReaper) would race with it, so a PID-1 agent uses this instead.
type SystemReaper struct {
	// starting is held for reading while a process is being started and
	// for writing while reaping, so a child cannot be reaped between its
	// fork and the moment it is marked as the agent's.
	starting sync.RWMutex
	mu       sync.Mutex                      // guards the maps below
	waiters  map[int]chan syscall.WaitStatus // pid → where its status goes
	early    map[int]syscall.WaitStatus      // the agent's, reaped before Wait
	known    map[int]bool                    // pids the agent started
}

// NewSystemReaper starts reaping every child of this process, whenever
// SIGCHLD says one changed state. It runs for the life of the process.
func NewSystemReaper() *SystemReaper {
	r := &SystemReaper{
		waiters: map[int]chan syscall.WaitStatus{},
		early:   map[int]syscall.WaitStatus{},
		known:   map[int]bool{},
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	go func() {
		for {
			r.reapAll()
			<-sigc
		}
	}()
	return r
}

// Start starts a process and marks it as one that will be waited for, so
// that its status is kept even if it exits before Wait is called.
func (r *SystemReaper) Start(start func() (*os.Process, error)) (*os.Process, error) {
	r.starting.RLock()
	defer r.starting.RUnlock()
	p, err := start()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.known[p.Pid] = true
	r.mu.Unlock()
	return p, nil
}

// reapAll reaps every child that has exited.
func (r *SystemReaper) reapAll() {
	r.starting.Lock()
	defer r.starting.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.deliver(pid, syscall.WaitStatus(ws))
	}
}

func (r *SystemReaper) deliver(pid int, ws syscall.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.waiters[pid]; ok {
		delete(r.waiters, pid)
		delete(r.known, pid)
		c <- ws
		return
	}
	// Started by the agent but not waited for yet: keep it. An orphan is
	// simply forgotten.
	if r.known[pid] {
		r.early[pid] = ws
	}
}

// Wait returns p's status once the reaper has reaped it, and releases p
// (its pidfd): the reaper, not os.Process, reaped it.
func (r *SystemReaper) Wait(p *os.Process) (syscall.WaitStatus, error) {
	defer p.Release()
	r.mu.Lock()
	if ws, ok := r.early[p.Pid]; ok {
		delete(r.early, p.Pid)
		delete(r.known, p.Pid)
		r.mu.Unlock()
		return ws, nil
	}
	c := make(chan syscall.WaitStatus, 1)
	r.waiters[p.Pid] = c
	r.mu.Unlock()
	return <-c, nil
}
