package vmm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
)

// How often and how long apart Attach asks again when the API answers 503.
const (
	attachBusyRetries = 3
	attachBusyPause   = 2 * time.Millisecond
)

// StateVersion is the format version of MachineState written by this
// package. Version 1 stored Config with its Go field names as keys, version
// 2 with their JSON names; Attach (and decoding) accept both, and refuse
// other versions.
const StateVersion = 2

// oldestStateVersion is the oldest MachineState format Attach accepts.
const oldestStateVersion = 1

// MachineState is everything needed to find and drive a running VMM again
// from another process: it is JSON-serialisable, and Attach turns it back
// into a Machine. Config.Console (a writer) is never recorded.
type MachineState struct {
	// Version is the format version (StateVersion).
	Version int `json:"version"`
	// ID is the VMM's ID.
	ID string `json:"id"`
	// PID and StartTime name the Firecracker process; StartTime (clock ticks
	// since boot) tells a reused PID apart.
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	// SocketPath is the API socket on the host; LogPath Firecracker's log.
	SocketPath string `json:"socket_path"`
	LogPath    string `json:"log_path"`
	// Firecracker is the release, as "1.14.2".
	Firecracker string `json:"firecracker"`
	// Paused is whether the microVM was paused when the state was taken.
	Paused bool `json:"paused"`
	// Config is the Machine's configuration, defaults applied.
	Config Config `json:"config"`
	// Pool is the placeholder pool and what is attached in it.
	Pool []Slot `json:"pool,omitempty"`
	// JailDir is the jail's instance directory (<base>/<exec>/<id>) when
	// the VMM runs under the jailer; Stop removes it.
	JailDir string `json:"jail_dir,omitempty"`
	// VsockName is the vsock socket's path as Firecracker holds it, when
	// that is relative to the run directory (a snapshot records it so).
	VsockName string `json:"vsock_name,omitempty"`
}

// State returns the Machine's current state, for Attach.
func (m *Machine) State() MachineState {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg := m.cfg
	cfg.Console = nil
	st := MachineState{
		Version:     StateVersion,
		ID:          cfg.ID,
		SocketPath:  m.socketPathLocked(),
		LogPath:     cfg.LogPath,
		Paused:      m.phaseLocked() == phasePaused,
		Config:      cfg,
		Pool:        copySlots(m.pool),
		Firecracker: "",
		VsockName:   m.vsockName,
	}
	if !m.version.IsZero() {
		st.Firecracker = m.version.String()
	}
	if m.proc != nil {
		st.PID, st.StartTime = m.proc.pid, m.proc.startTime
	}
	if m.jail != nil {
		st.JailDir = m.jail.layout.InstanceDir
		st.LogPath = m.jail.layout.LogPathHost
	}
	return st
}

// Attach returns a Machine for the running VMM st describes, such as one
// started by another process. It opens a pidfd for st.PID and checks the
// process's start time against st.StartTime: a process that exited, or a
// reused PID, gives an error matching ErrNotFound. The VMM is not this
// process's child: Stop and Kill signal it through the pidfd and Wait
// reports its end with an unknown exit status. Call Release to let go of it
// without stopping it.
func Attach(ctx context.Context, st MachineState, opts ...Option) (m *Machine, err error) {
	if st.Version < oldestStateVersion || st.Version > StateVersion {
		return nil, fmt.Errorf("attach: state format version %d, this package reads %d to %d: %w", st.Version, oldestStateVersion, StateVersion, ErrInvalidState)
	}
	if st.PID <= 0 || st.StartTime == 0 {
		return nil, fmt.Errorf("attach: state has no process (pid %d): %w", st.PID, ErrNotFound)
	}
	m = newMachine(st.Config, buildOptions(opts))
	ctx, span := m.startSpan(ctx, "vmm.Attach")
	defer func() { endSpan(span, err) }()

	var copts []fcapi.Option
	copts = append(copts, fcapi.WithLogger(m.logger))
	var ver fcapi.Version
	if st.Firecracker != "" {
		if ver, err = fcapi.ParseVersion(st.Firecracker); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
		copts = append(copts, fcapi.WithVersion(ver))
	}
	p, err := watchPID(st.PID, st.StartTime, nil)
	if err != nil {
		return nil, fmt.Errorf("attach to firecracker pid %d: %w", st.PID, err)
	}
	client, err := fcapi.New(st.SocketPath, copts...)
	if err != nil {
		p.pidfd.Close()
		<-p.done
		return nil, fmt.Errorf("attach: %w", err)
	}
	// Ask the VMM how it is: this checks the socket belongs to a live API
	// and learns whether the microVM is paused.
	info, err := client.GetInstanceInfo(ctx)
	// Firecracker may still count connections that were just closed: a
	// 503 right after they are released goes away within milliseconds.
	for try := 0; errors.Is(err, fcapi.ErrBusy) && try < attachBusyRetries; try++ {
		select {
		case <-ctx.Done():
		case <-time.After(attachBusyPause):
		}
		info, err = client.GetInstanceInfo(ctx)
	}
	if err != nil {
		client.Close()
		p.pidfd.Close()
		<-p.done
		return nil, fmt.Errorf("attach to firecracker pid %d: %w", st.PID, err)
	}
	ph := phaseRunning
	switch info.State {
	case fcapi.StatePaused:
		ph = phasePaused
	case fcapi.StateNotStarted:
		ph = phaseStarting
	}
	if ver.IsZero() {
		if ver, err = client.Version(ctx); err != nil {
			client.Close()
			p.pidfd.Close()
			<-p.done
			return nil, fmt.Errorf("attach: %w", err)
		}
	}

	m.mu.Lock()
	m.proc, m.client, m.version, m.phase = p, client, ver, ph
	m.pool = copySlots(st.Pool)
	m.api = st.Config
	m.vsockName = st.VsockName
	if st.JailDir != "" && st.Config.Jailer != nil {
		layout := newJailLayout(&m.cfg)
		js := &jailState{layout: layout}
		cfg := m.cfg
		js.remove = func() error { return CleanJail(cfg) }
		m.jail = js
	}
	m.mu.Unlock()
	return m, nil
}

// Pause pauses the microVM's vCPUs. Pausing a paused VM is an error
// matching ErrInvalidState.
func (m *Machine) Pause(ctx context.Context) (err error) {
	ctx, span := m.startSpan(ctx, "vmm.Pause")
	defer func() { endSpan(span, err) }()
	client, err := m.live("pause", phaseRunning)
	if err != nil {
		return err
	}
	if err := client.Pause(ctx); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	m.setPhase(phaseRunning, phasePaused)
	return nil
}

// Resume resumes a paused microVM. Resuming a running VM is an error
// matching ErrInvalidState.
func (m *Machine) Resume(ctx context.Context) (err error) {
	ctx, span := m.startSpan(ctx, "vmm.Resume")
	defer func() { endSpan(span, err) }()
	client, err := m.live("resume", phasePaused)
	if err != nil {
		return err
	}
	if err := client.Resume(ctx); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	m.setPhase(phasePaused, phaseRunning)
	return nil
}

// setPhase moves from one phase to another, unless something else (an
// exit) happened meanwhile.
func (m *Machine) setPhase(from, to phase) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase == from {
		m.phase = to
	}
}
