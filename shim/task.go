package shim

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kindling-vm/kindling/sandbox"
)

var _ taskapi.TaskService = (*Service)(nil)

// State reports a process's status.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	p, err := t.process(r.ExecID)
	paused := t.paused
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	started, exited, pid, status, at := p.state()
	st := task.Status_CREATED
	switch {
	case exited:
		st = task.Status_STOPPED
	case paused:
		st = task.Status_PAUSED
	case started:
		st = task.Status_RUNNING
	}
	if p.id == "" {
		pid = t.vmmPID
	}
	resp := &taskapi.StateResponse{ID: idOr(r.ExecID, r.ID), Bundle: t.bundle, Pid: pid, Status: st,
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal, ExecID: r.ExecID}
	if exited {
		resp.ExitStatus, resp.ExitedAt = status, timestamppb.New(at)
	}
	return resp, nil
}

// Delete removes an exec, or the task: its VM, its sandbox record and
// its root filesystem copy.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	t, p, err := s.taskProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	started, exited, pid, status, at := p.state()
	if started && !exited {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "process %s of task %s is running: kill it first", idOr(r.ExecID, "init"), r.ID)
	}
	if r.ExecID != "" {
		s.mu.Lock()
		delete(t.execs, r.ExecID)
		s.mu.Unlock()
		return &taskapi.DeleteResponse{Pid: pid, ExitStatus: status, ExitedAt: timestamppb.New(at)}, nil
	}
	if !exited {
		// Created, never started: the VM goes, and the process with it.
		t.init.exit(128+uint32(syscall.SIGKILL), nil)
		_, _, _, status, at = t.init.state()
	}
	s.teardown(ctx, t)
	s.mu.Lock()
	delete(s.tasks, r.ID)
	s.mu.Unlock()
	s.publish(topicDelete, &events.TaskDelete{ContainerID: t.id, Pid: t.vmmPID, ExitStatus: status, ExitedAt: timestamppb.New(at)})
	return &taskapi.DeleteResponse{Pid: t.vmmPID, ExitStatus: status, ExitedAt: timestamppb.New(at)}, nil
}

// teardown ends the task's VM and removes everything the shim made for it.
func (s *Service) teardown(ctx context.Context, t *taskState) {
	if t.joined {
		if err := s.removeJoined(ctx, t); err != nil {
			s.log.Warn("remove container files", "task", t.id, "err", err)
		}
		return
	}
	if t.client != nil {
		t.client.Close()
	}
	if err := t.portFwd.close(); err != nil {
		s.log.Warn("stop the port forward", "task", t.id, "err", err)
	}
	if err := removeSandbox(ctx, s.rt, t.sandboxID); err != nil {
		s.log.Warn("remove VM", "sandbox", t.sandboxID, "err", err)
	}
	if err := leavePodNetwork(ctx, t.spec); err != nil {
		s.log.Warn("leave the pod's network", "task", t.id, "err", err)
	}
	if err := os.RemoveAll(t.workDir); err != nil {
		s.log.Warn("remove task files", "dir", t.workDir, "err", err)
	}
}

// removeSandbox kills and removes sandbox id, if there is one.
func removeSandbox(ctx context.Context, rt *sandbox.Runtime, id string) error {
	if rt == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := rt.Remove(ctx, id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return err
	}
	return nil
}

// Pids lists the task's host process: its VMM. The guest's processes are
// not host processes.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	return &taskapi.PidsResponse{Processes: []*task.ProcessInfo{{Pid: t.vmmPID}}}, nil
}

// Pause freezes the whole VM.
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return s.setPaused(ctx, r.ID, true)
}

// Resume thaws the VM.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return s.setPaused(ctx, r.ID, false)
}

// setPaused pauses (or resumes) the VM of task id and publishes the event.
// One container of a pod cannot be paused alone: its VM is the pod's.
func (s *Service) setPaused(ctx context.Context, id string, pause bool) (*emptypb.Empty, error) {
	verb, change := "resume", s.rt.Resume
	if pause {
		verb, change = "pause", s.rt.Pause
	}
	t, err := s.task(id)
	if err != nil {
		return nil, err
	}
	if t.joined {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "kindling: %s of one container of a pod (the pod's VM goes with its sandbox)", verb)
	}
	if err := change(ctx, t.sandboxID); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%s VM: %v", verb, err)
	}
	s.mu.Lock()
	t.paused = pause
	s.mu.Unlock()
	if pause {
		s.publish(topicPaused, &events.TaskPaused{ContainerID: t.id})
	} else {
		s.publish(topicResumed, &events.TaskResumed{ContainerID: t.id})
	}
	return &emptypb.Empty{}, nil
}

// taskProcess finds task id and its process execID ("" for the task's
// init), as most task calls start.
func (s *Service) taskProcess(id, execID string) (*taskState, *process, error) {
	t, err := s.task(id)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	p, err := t.process(execID)
	s.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	return t, p, nil
}

// Checkpoint is not supported.
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "kindling: checkpoint of a task")
}

// Kill delivers a signal to a process in the guest (through the agent and
// the container's keeper). A task whose init never started is ended by
// ending its VM.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	p, err := t.process(r.ExecID)
	var others []*process
	if r.All && r.ExecID == "" {
		for _, e := range t.execs {
			others = append(others, e)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sig := syscall.Signal(r.Signal)
	started, exited, _, _, _ := p.state()
	switch {
	case exited:
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "process %s of task %s already finished", idOr(r.ExecID, "init"), r.ID)
	case !started && r.ExecID == "" && t.joined:
		p.exit(128+uint32(sig), s.onExit(t, p))
		return &emptypb.Empty{}, nil
	case !started && r.ExecID == "":
		if err := removeSandbox(ctx, s.rt, t.sandboxID); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "end the VM: %v", err)
		}
		p.exit(128+uint32(sig), s.onExit(t, p))
		return &emptypb.Empty{}, nil
	case !started:
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s of task %s not started", r.ExecID, r.ID)
	}
	p.signalling.RLock()
	for _, o := range others {
		o.signal(ctx, sig)
	}
	err = p.signal(ctx, sig)
	p.signalling.RUnlock()
	if err != nil && !signalled(ctx, p, sig, err) {
		if errors.Is(err, errProcessDone) {
			return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "process %s of task %s already finished", idOr(r.ExecID, "init"), r.ID)
		}
		return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "signal %d to %s of task %s: %v", sig, idOr(r.ExecID, "init"), r.ID, err)
	}
	return &emptypb.Empty{}, nil
}

// signalled decides whether a signal whose delivery reported err reached
// the process after all: the agent's answer can be lost although the
// signal was delivered (the connection broke as the process died), so a
// process that exits within a moment counts as signalled, and one still
// running gets the signal once more.
func signalled(ctx context.Context, p *process, sig syscall.Signal, err error) bool {
	if errors.Is(err, errProcessDone) || errors.Is(err, errNotStarted) {
		return false
	}
	select {
	case <-p.done:
		return true
	case <-time.After(time.Second):
	case <-ctx.Done():
		return false
	}
	if err := p.signal(ctx, sig); err != nil {
		return errors.Is(err, errProcessDone)
	}
	return true
}

// Exec records an extra process of the task, started by Start.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	var pr specs.Process
	if r.Spec == nil || json.Unmarshal(r.Spec.GetValue(), &pr) != nil || len(pr.Args) == 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: no valid process spec", r.ExecID)
	}
	if err := checkStdio(r.Stdin, r.Stdout, r.Stderr); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: %v", r.ExecID, err)
	}
	p := newProcess(r.ExecID, r.Terminal, r.Stdin, r.Stdout, r.Stderr)
	p.execProc = &pr
	s.mu.Lock()
	if _, ok := t.execs[r.ExecID]; ok {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s of task %s", r.ExecID, r.ID)
	}
	t.execs[r.ExecID] = p
	s.mu.Unlock()
	s.publish(topicExecAdded, &events.TaskExecAdded{ContainerID: t.id, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// ResizePty resizes a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	_, p, err := s.taskProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.resize(ctx, uint16(r.Height), uint16(r.Width)); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "resize: %v", err)
	}
	return &emptypb.Empty{}, nil
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.taskProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		if err := p.closeStdin(); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "close stdin: %v", err)
		}
	}
	return &emptypb.Empty{}, nil
}

// Wait waits for a process to exit.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.taskProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, _, _, status, at := p.state()
	return &taskapi.WaitResponse{ExitStatus: status, ExitedAt: timestamppb.New(at)}, nil
}

// Connect reports the shim's and the task's host processes.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if t, err := s.task(r.ID); err == nil {
		resp.TaskPid = t.vmmPID
	}
	return resp, nil
}

// Shutdown ends the shim once it has no task left.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 && !r.Now {
		return &emptypb.Empty{}, nil
	}
	s.shutdown()
	return &emptypb.Empty{}, nil
}
