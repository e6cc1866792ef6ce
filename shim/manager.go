package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	shimlib "github.com/containerd/containerd/runtime/v2/shim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kindling-vm/kindling/sandbox"
)

// RuntimeName is the runtime's name in containerd.
const RuntimeName = "io.containerd.kindling.v2"

// shimService is what containerd's shim library runs: the task service
// plus the start and delete actions of the shim binary.
type shimService struct {
	*Service
	id string
}

var _ shimlib.Shim = (*shimService)(nil)

// publisherFunc adapts containerd's publisher.
type publisherFunc func(ctx context.Context, topic string, ev proto.Message) error

func (f publisherFunc) Publish(ctx context.Context, topic string, ev proto.Message) error {
	return f(ctx, topic, ev)
}

// New is the shim library's init function (shim.Run): it returns the
// service of shim id.
func New(ctx context.Context, id string, pub shimlib.Publisher, shutdown func()) (shimlib.Shim, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(logWriter(), nil)).With("shim", id, "namespace", ns)
	p := publisherFunc(func(ctx context.Context, topic string, ev proto.Message) error {
		return pub.Publish(namespaces.WithNamespace(ctx, ns), topic, ev)
	})
	return &shimService{Service: NewService(ConfigFromEnv(), ns, log, p, shutdown), id: id}, nil
}

// logWriter is the shim's log: containerd's "log" FIFO in the bundle when
// the shim serves (the library opens it for logrus; we open it too), else
// stderr.
func logWriter() io.Writer {
	if f, err := os.OpenFile("log", os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		return f
	}
	return os.Stderr
}

// groupID is the shim a task belongs to: a pod's containers share the
// pod sandbox's shim (and VM).
func groupID(id string) string {
	b, err := os.ReadFile("config.json")
	if err != nil {
		return id
	}
	var sp struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(b, &sp) != nil {
		return id
	}
	if sp.Annotations[annContainerType] == "container" && sp.Annotations[annSandboxID] != "" {
		return sp.Annotations[annSandboxID]
	}
	return id
}

// StartShim is the binary's "start" action: it starts the serving shim
// (this binary, again) on a socket of its own, or returns the address of
// the pod's running shim, and prints the address for containerd.
func (s *shimService) StartShim(ctx context.Context, opts shimlib.StartOpts) (_ string, err error) {
	group := groupID(opts.ID)
	addr, err := shimlib.SocketAddress(ctx, opts.Address, group)
	if err != nil {
		return "", err
	}
	sock, err := shimlib.NewSocket(addr)
	if err != nil {
		if !shimlib.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if shimlib.CanConnect(addr) {
			if err := shimlib.WriteAddress("address", addr); err != nil {
				return "", err
			}
			return addr, nil
		}
		if err := shimlib.RemoveSocket(addr); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if sock, err = shimlib.NewSocket(addr); err != nil {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if err != nil {
			sock.Close()
			shimlib.RemoveSocket(addr)
		}
	}()
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	// Not bound to ctx: the library cancels it as this process returns,
	// and a command bound to it would be killed then.
	cmd, err := shimlib.Command(context.WithoutCancel(ctx), &shimlib.CommandConfig{Runtime: self, Address: opts.Address,
		TTRPCAddress: opts.TTRPCAddress, Path: cwd, Args: []string{"-id", opts.ID}})
	if err != nil {
		return "", err
	}
	f, err := sock.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	if opts.Debug {
		cmd.Args = append(cmd.Args[:1], append([]string{"-debug"}, cmd.Args[1:]...)...)
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start the shim: %w", err)
	}
	// The serving shim outlives this process; reap it should it fail now.
	go cmd.Wait()
	if err := shimlib.WriteAddress("address", addr); err != nil {
		cmd.Process.Kill()
		return "", err
	}
	if err := shimlib.AdjustOOMScore(cmd.Process.Pid); err != nil {
		s.log.Warn("adjust the shim's OOM score", "err", err)
	}
	return addr, nil
}

// Cleanup is the binary's "delete" action, run by containerd when a shim
// is gone: it ends and removes the task's VM and unmounts the bundle's
// rootfs if the shim left it mounted.
func (s *shimService) Cleanup(ctx context.Context) (*taskapi.DeleteResponse, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	// Without a state root there is no VM to end: do not make one.
	var rt *sandbox.Runtime
	if _, err = os.Stat(s.cfg.Root); err == nil {
		rt, err = s.runtime()
	}
	if err == nil && rt != nil {
		sbID := SandboxID(s.ns, s.id)
		if err := removeSandbox(ctx, rt, sbID); err != nil {
			s.log.Warn("remove VM", "sandbox", sbID, "err", err)
		}
		os.RemoveAll(filepath.Join(s.cfg.Root, shimDir, sbID))
	}
	// containerd runs this action whenever its connection to a shim
	// closes, also after a pod's container was deleted normally: only the
	// task that owns the VM (not a container joined to a pod) may touch
	// the pod's network.
	if sp, err := readSpec(cwd); err == nil && sp.Annotations[annContainerType] != "container" {
		if err := leavePodNetwork(ctx, sp); err != nil {
			s.log.Warn("leave the pod's network", "err", err)
		}
	}
	if err := mount.UnmountAll(filepath.Join(cwd, "rootfs"), 0); err != nil {
		s.log.Warn("unmount rootfs", "err", err)
	}
	// The dead shim's socket (it could not remove it itself); a pod's
	// shim that still answers keeps it.
	if addr, err := shimlib.ReadAddress(filepath.Join(cwd, "address")); err == nil && !shimlib.CanConnect(addr) {
		if err := shimlib.RemoveSocket(addr); err != nil {
			s.log.Warn("remove the shim's socket", "err", err)
		}
	}
	return &taskapi.DeleteResponse{ExitStatus: 128 + uint32(syscall.SIGKILL), ExitedAt: timestamppb.New(time.Now())}, nil
}
