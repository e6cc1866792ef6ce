package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/container"
	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/sandbox"
)

// shimDir holds the shim's own files under the state root (the dot keeps
// it out of the sandbox namespace).
const shimDir = ".shim"

// Publisher sends events to containerd.
type Publisher interface {
	Publish(ctx context.Context, topic string, event proto.Message) error
}

// Service is the task service of one shim: the tasks of one pod (or one
// plain task), in one VM.
type Service struct {
	cfg      Config
	ns       string // containerd namespace
	log      *slog.Logger
	publish  func(topic string, ev proto.Message)
	shutdown func()

	rtOnce sync.Once
	rt     *sandbox.Runtime
	rtErr  error

	mu    sync.Mutex
	tasks map[string]*taskState
}

// taskState is one task: a container, its VM and its processes.
type taskState struct {
	id        string
	bundle    string
	spec      *specs.Spec
	sandboxID string
	workDir   string // the shim's files for it (the container's ext4)
	vmmPID    uint32
	client    *agent.Client
	vmGone    chan struct{}
	init      *process
	execs     map[string]*process
	paused    bool
	// joined: a container of a pod, in the pod sandbox task's VM; its
	// rootfs is an ext4 in a hotplug slot of that VM, and the VM is not
	// its own.
	joined bool
	// rootExt4, rootSlot and rootDevice are a joined container's root:
	// its ext4 on the host (in the pod's workDir), the slot holding it
	// ("" once given back) and the guest's device of that slot.
	rootExt4, rootSlot, rootDevice string
	// portFwd carries CRI's port forward from the pod's network
	// namespace into the guest (a VM on a pod network only).
	portFwd *portForwarder
	// vmMemMiB is the VM's memory (the pod's, for a joined container).
	vmMemMiB int
	// mounts are the container's extra mounts in the guest.
	mounts []container.Mount
	// volumes holds the keys of the host paths copied into the VM (the
	// VM's owner only; guarded by Service.mu).
	volumes map[string]bool
}

// NewService returns the task service. publish sends an event (errors are
// logged by the caller's publisher); shutdown ends the shim.
func NewService(cfg Config, ns string, log *slog.Logger, pub Publisher, shutdown func()) *Service {
	s := &Service{cfg: cfg, ns: ns, log: log, shutdown: shutdown, tasks: map[string]*taskState{}}
	s.publish = func(topic string, ev proto.Message) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := pub.Publish(ctx, topic, ev); err != nil {
			s.log.Warn("publish event", "topic", topic, "err", err)
		}
	}
	return s
}

func (s *Service) runtime() (*sandbox.Runtime, error) {
	s.rtOnce.Do(func() {
		if err := os.MkdirAll(s.cfg.Root, 0o700); err != nil {
			s.rtErr = err
			return
		}
		s.rt, s.rtErr = sandbox.Open(s.cfg.Root, sandbox.WithLogger(s.log))
	})
	return s.rt, s.rtErr
}

// SandboxID is the kindling sandbox that runs task id of containerd
// namespace ns: fixed, so that a new shim process (containerd's "delete"
// after a crash) finds it.
func SandboxID(ns, id string) string {
	h := sha256.Sum256([]byte(ns + "/" + id))
	return "ctd-" + hex.EncodeToString(h[:12])
}

// Task API events' topics (containerd's names).
const (
	topicCreate      = "/tasks/create"
	topicStart       = "/tasks/start"
	topicExit        = "/tasks/exit"
	topicDelete      = "/tasks/delete"
	topicExecAdded   = "/tasks/exec-added"
	topicExecStarted = "/tasks/exec-started"
	topicPaused      = "/tasks/paused"
	topicResumed     = "/tasks/resumed"
)

func (s *Service) task(id string) (*taskState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "task %s", id)
	}
	return t, nil
}

func (t *taskState) process(execID string) (*process, error) {
	if execID == "" {
		return t.init, nil
	}
	p, ok := t.execs[execID]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "exec %s of task %s", execID, t.id)
	}
	return p, nil
}

// readSpec reads the bundle's OCI config.
func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read the bundle's config.json: %w", err)
	}
	var sp specs.Spec
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("bundle config.json: %w", err)
	}
	if sp.Process == nil || len(sp.Process.Args) == 0 {
		return nil, errors.New("bundle config.json: no process args")
	}
	return &sp, nil
}

// CRI's annotations on a task's spec.
const (
	annContainerType = "io.kubernetes.cri.container-type"
	annSandboxID     = "io.kubernetes.cri.sandbox-id"
	// A pod's total limits, on its sandbox's spec (containerd 1.7).
	annSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	annSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
	annSandboxMemory    = "io.kubernetes.cri.sandbox-memory"
)

// Create boots the task's VM with its root filesystem and leaves its
// process unstarted.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (_ *taskapi.CreateTaskResponse, err error) {
	if r.Checkpoint != "" {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "create from a checkpoint")
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "kindling shim: %v", err)
	}
	jailer, err := s.cfg.JailerPath()
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "kindling shim: %v", err)
	}
	sp, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	if err := container.ValidID(r.ID); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	if err := checkStdio(r.Stdin, r.Stdout, r.Stderr); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	if sp.Annotations[annContainerType] == "container" {
		return s.createJoined(ctx, r, sp)
	}
	s.mu.Lock()
	if _, ok := s.tasks[r.ID]; ok {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "task %s", r.ID)
	}
	s.mu.Unlock()
	plan, err := planMounts(sp, s.log, r.ID)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	rt, err := s.runtime()
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "kindling runtime at %s: %v", s.cfg.Root, err)
	}
	t := &taskState{id: r.ID, bundle: r.Bundle, spec: sp, sandboxID: SandboxID(s.ns, r.ID),
		vmGone: make(chan struct{}), execs: map[string]*process{}, volumes: map[string]bool{},
		init: newProcess("", r.Terminal, r.Stdin, r.Stdout, r.Stderr)}
	t.workDir = filepath.Join(s.cfg.Root, shimDir, t.sandboxID)
	defer func() {
		if err != nil {
			s.teardown(context.WithoutCancel(ctx), t)
		}
	}()
	if err := os.MkdirAll(t.workDir, 0o700); err != nil {
		return nil, err
	}
	rootfsExt4 := filepath.Join(t.workDir, "rootfs.ext4")
	if err := buildContainerRootfs(ctx, r, sp, rootfsExt4); err != nil {
		return nil, err
	}
	base, err := baseRootfs(ctx, s.cfg.Root, s.cfg.Agent)
	if err != nil {
		return nil, err
	}
	pn, err := joinPodNetwork(ctx, sp, s.log)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	vcpus, mem := resources(sp)
	vmSpec := sandbox.Spec{
		ID: t.sandboxID, Kernel: s.cfg.Kernel, KernelArgs: image.BootArg, Firecracker: s.cfg.Firecracker,
		Jailer: jailer, NoJailer: jailer == "",
		Rootfs: &sandbox.Disk{Path: base, ReadOnly: true},
		// Read-write even for a read-only root: the guest makes the
		// container's mount read-only once its mount points exist.
		Drives:   []sandbox.Disk{{Path: rootfsExt4}},
		VsockCID: 3, VCPUs: vcpus, MemoryMiB: mem,
		Labels: map[string]string{"io.containerd.namespace": s.ns, "io.containerd.task": truncate(r.ID, 255)},
	}
	if sp.Annotations[annContainerType] == "sandbox" {
		// The pod's other containers get their roots hot-plugged.
		vmSpec.Placeholders, vmSpec.HotplugWritable = podSlots, true
	}
	if pn != nil {
		pn.apply(&vmSpec)
	}
	t.vmMemMiB = mem
	if _, err := rt.Create(ctx, vmSpec, sandbox.CreateOptions{}); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "create the VM: %v", err)
	}
	info, err := rt.Start(ctx, t.sandboxID)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnavailable, "start the VM: %v", err)
	}
	t.vmmPID = uint32(info.PID)
	// The runtime gave the guest's agent this sandbox's access token when
	// it started it; every call must carry it.
	token, err := rt.AgentToken(ctx, t.sandboxID)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnavailable, "guest agent of VM %s: %v", t.sandboxID, err)
	}
	if t.client, err = dialAgent(ctx, info.VsockSocket, token); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnavailable, "guest agent of VM %s: %v; console: %s; VMM log: %s",
			t.sandboxID, err, tail(info.ConsoleLog, 1024), tail(info.FirecrackerLog, 8000))
	}
	if t.mounts, err = s.copyVolumes(ctx, t, plan); err != nil {
		return nil, err
	}
	if pn != nil {
		// Without it the pod still runs; only CRI's PortForward fails.
		if t.portFwd, err = startPortForward(pn.nsPath, info.VsockSocket, s.log); err != nil {
			s.log.Warn("CRI port forward into the guest not served", "task", r.ID, "err", err)
			err = nil
		}
	}
	go s.watchVM(t)
	s.mu.Lock()
	s.tasks[r.ID] = t
	s.mu.Unlock()
	s.publish(topicCreate, &events.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO: &events.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}, Pid: t.vmmPID})
	return &taskapi.CreateTaskResponse{Pid: t.vmmPID}, nil
}

// tail is the end of file p, for an error message.
func tail(p string, n int64) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return strconv.Quote(string(b))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// buildContainerRootfs builds dst from the bundle's rootfs (containerd's
// mounts mounted for the time of the build): the VM gets a copy, the
// snapshot is not held.
func buildContainerRootfs(ctx context.Context, r *taskapi.CreateTaskRequest, sp *specs.Spec, dst string) error {
	dir, unmount, err := mountRootfs(r, sp)
	if err != nil {
		return err
	}
	defer unmount()
	if err := mkfs(ctx, dir, dst, 64); err != nil {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container rootfs: %v", err)
	}
	return nil
}

// resources maps the limits to the VM: the CPU quota rounded up plus one
// vCPU, the memory limit plus 256 MiB for the guest kernel and agent
// (Kata's idea: the limits are the workload's, the VM needs more). A pod
// sandbox's spec carries the pod's total limits as annotations (containerd
// 1.7 sets them; 1.6 does not): they win over the pause container's own.
// Without limits: 1 vCPU and 512 MiB.
func resources(sp *specs.Spec) (vcpus, memMiB int) {
	var quota, period, mem int64
	if sp.Linux != nil && sp.Linux.Resources != nil {
		res := sp.Linux.Resources
		if c := res.CPU; c != nil && c.Quota != nil && c.Period != nil {
			quota, period = *c.Quota, int64(*c.Period)
		}
		if m := res.Memory; m != nil && m.Limit != nil {
			mem = *m.Limit
		}
	}
	ann := func(k string) int64 {
		v, err := strconv.ParseInt(sp.Annotations[k], 10, 64)
		if err != nil {
			return 0
		}
		return v
	}
	if q, p := ann(annSandboxCPUQuota), ann(annSandboxCPUPeriod); q > 0 && p > 0 {
		quota, period = q, p
	}
	if m := ann(annSandboxMemory); m > 0 {
		mem = m
	}
	vcpus, memMiB = 1, 512
	if quota > 0 && period > 0 {
		vcpus = 1 + int(math.Ceil(float64(quota)/float64(period)))
	}
	if mem > 0 {
		memMiB = 256 + int((mem+1<<20-1)>>20)
	}
	return min(vcpus, 32), memMiB
}

// dialAgent waits for the guest agent to answer, with the access token.
func dialAgent(ctx context.Context, vsock, token string) (*agent.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := agent.Dial(ctx, agent.Config{VsockPath: vsock, AccessToken: token, DialTimeout: 2 * time.Second, RequestTimeout: 5 * time.Second})
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// watchVM waits for the task's VM to end; processes still running then
// end with vmGoneStatus.
func (s *Service) watchVM(t *taskState) {
	rt, _ := s.runtime()
	_, err := rt.Wait(context.Background(), t.sandboxID)
	if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		s.log.Warn("wait for VM", "sandbox", t.sandboxID, "err", err)
	}
	close(t.vmGone)
	if started, exited, _, _, _ := t.init.state(); !started && !exited {
		t.init.exit(vmGoneStatus, s.onExit(t, t.init))
	}
}

func (s *Service) onExit(t *taskState, p *process) func(uint32, time.Time) {
	return func(status uint32, at time.Time) {
		_, _, pid, _, _ := p.state()
		if p.id == "" {
			pid = t.vmmPID
		}
		// Not before a Kill that is still signalling p has answered.
		p.signalling.Lock()
		//lint:ignore SA2001 a barrier, not a critical section
		p.signalling.Unlock()
		s.publish(topicExit, &events.TaskExit{ContainerID: t.id, ID: idOr(p.id, t.id), Pid: pid, ExitStatus: status, ExitedAt: timestamppb.New(at)})
		if p.id == "" {
			// The init is gone: so is the container, and every exec in it.
			go func() {
				s.mu.Lock()
				execs := make([]*process, 0, len(t.execs))
				for _, e := range t.execs {
					execs = append(execs, e)
				}
				s.mu.Unlock()
				for _, e := range execs {
					e.signal(context.Background(), syscall.SIGKILL)
				}
			}()
		}
	}
}

func idOr(id, def string) string {
	if id == "" {
		return def
	}
	return id
}

// Start starts the init (runs the container) or an exec.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	t, p, err := s.taskProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if started, exited, _, _, _ := p.state(); started || exited {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "process %s of task %s already started", idOr(r.ExecID, "init"), r.ID)
	}
	var cs container.Spec
	mode := "run"
	if r.ExecID == "" {
		cs, err = initSpec(t)
	} else {
		mode = "exec"
		cs, err = execSpec(t, p)
	}
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	arg, err := cs.Encode()
	if err != nil {
		return nil, err
	}
	args := []string{image.AgentPath, container.Arg, mode, arg}
	// A logging program's environment, as containerd's shims give it.
	logEnv := []string{"CONTAINER_ID=" + t.id, "CONTAINER_NAMESPACE=" + s.ns}
	if err := p.start(ctx, t.client, args, logEnv, t.vmGone, s.onExit(t, p)); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "%v", err)
	}
	if r.ExecID == "" {
		// The container runs once its keeper has written the init's PID
		// (after the init's mounts and pivot): an exec before that could
		// not join it.
		if err := awaitContainer(ctx, t, p); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "%v", err)
		}
	}
	_, _, pid, _, _ := p.state()
	if r.ExecID == "" {
		s.publish(topicStart, &events.TaskStart{ContainerID: t.id, Pid: t.vmmPID})
		return &taskapi.StartResponse{Pid: t.vmmPID}, nil
	}
	s.publish(topicExecStarted, &events.TaskExecStarted{ContainerID: t.id, ExecID: r.ExecID, Pid: pid})
	return &taskapi.StartResponse{Pid: pid}, nil
}

// The drive holding the container's rootfs: the second drive, after the
// guest's root (vda).
const rootfsDevice = "/dev/vdb"

func initSpec(t *taskState) (container.Spec, error) {
	sp := t.spec
	cs := processSpec(t.id, sp.Process)
	cs.Rootfs = container.Rootfs{Device: rootfsDevice, ReadOnly: sp.Root != nil && sp.Root.Readonly}
	if t.joined {
		cs.Rootfs.Device = t.rootDevice
	}
	cs.Hostname = sp.Hostname
	cs.Mounts = t.mounts
	return cs, cs.Validate(true)
}

func standardMount(dst string) bool {
	switch filepath.Clean(dst) {
	case "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup":
		return true
	}
	return false
}

func processSpec(id string, pr *specs.Process) container.Spec {
	cs := container.Spec{ID: id, Args: pr.Args, Env: pr.Env, Cwd: pr.Cwd, Terminal: pr.Terminal,
		UID: pr.User.UID, GID: pr.User.GID, AdditionalGIDs: pr.User.AdditionalGids}
	for _, r := range pr.Rlimits {
		cs.Rlimits = append(cs.Rlimits, container.Rlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return cs
}

func execSpec(t *taskState, p *process) (container.Spec, error) {
	cs := processSpec(t.id, p.execProc)
	cs.Terminal = p.terminal
	return cs, cs.Validate(false)
}

// awaitContainer waits until the guest shows the container's PID file, or
// its init has exited (a failed start: the exit is reported as usual).
func awaitContainer(ctx context.Context, t *taskState, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := t.client.Stat(ctx, container.PIDFile(t.id), agent.FileOptions{User: "root"}); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("container %s: not running after 30s", t.id)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
