package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/container"
	"github.com/kindling-vm/kindling/image"
)

// Stats reports the container's figures, measured in the guest by the
// agent's container helper ("container stats ID": the processes of the
// container's PID namespace, from /proc), as cgroup v2 metrics — the type
// containerd's ctr and CRI plugin decode for any task.
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	if started, exited, _, _, _ := t.init.state(); !started || exited {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "stats of task %s: its container is not running", r.ID)
	}
	st, err := guestStats(ctx, t.client, t.id)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnavailable, "stats of task %s: %v", r.ID, err)
	}
	// The VM's memory bounds the container; a simulated guest reports the
	// host's instead.
	if vm := uint64(t.vmMemMiB) << 20; vm > 0 && (st.LimitBytes == 0 || st.LimitBytes > vm) {
		st.LimitBytes = vm
	}
	return &taskapi.StatsResponse{Stats: &anypb.Any{TypeUrl: metricsV2Type, Value: encodeMetricsV2(st)}}, nil
}

// guestStats runs the container helper's "stats" in the guest.
func guestStats(ctx context.Context, c *agent.Client, id string) (container.Stats, error) {
	var st container.Stats
	var stdout, stderr bytes.Buffer
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{image.AgentPath, container.Arg, "stats", id},
		User: "root", Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return st, err
	}
	code, err := p.Wait(ctx)
	if err != nil {
		return st, err
	}
	if code != 0 {
		return st, fmt.Errorf("exit %d: %s", code, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		return st, fmt.Errorf("read the guest's figures: %w", err)
	}
	return st, nil
}

// metricsV2Type is the type of containerd's cgroup v2 metrics message
// (io.containerd.cgroups.v2.Metrics, from containerd's cgroups
// repository), which ctr and the CRI plugin unpack from a task's stats.
const metricsV2Type = "io.containerd.cgroups.v2.Metrics"

// encodeMetricsV2 writes st as that message's protobuf encoding: the
// fields kindling fills, by the numbers of its public definition
// (Metrics: pids 1, cpu 2, memory 4; PidsStat: current 1, limit 2;
// CPUStat: usage_usec 1, user_usec 2, system_usec 3; MemoryStat: anon 1,
// file 2, shmem 6, pgfault 18, pgmajfault 19, usage 32, usage_limit 33).
func encodeMetricsV2(st container.Stats) []byte {
	msg := func(fields ...[2]uint64) []byte {
		var b []byte
		for _, f := range fields {
			if f[1] != 0 {
				b = protowire.AppendTag(b, protowire.Number(f[0]), protowire.VarintType)
				b = protowire.AppendVarint(b, f[1])
			}
		}
		return b
	}
	usage := st.AnonBytes + st.FileBytes + st.ShmemBytes
	var b []byte
	for _, sub := range []struct {
		num  protowire.Number
		body []byte
	}{
		{1, msg([2]uint64{1, st.Pids})},
		{2, msg([2]uint64{1, st.UserUsec + st.SystemUsec}, [2]uint64{2, st.UserUsec}, [2]uint64{3, st.SystemUsec})},
		{4, msg([2]uint64{1, st.AnonBytes}, [2]uint64{2, st.FileBytes}, [2]uint64{6, st.ShmemBytes},
			[2]uint64{18, st.PageFaults}, [2]uint64{19, st.MajorFaults}, [2]uint64{32, usage}, [2]uint64{33, st.LimitBytes})},
	} {
		b = protowire.AppendTag(b, sub.num, protowire.BytesType)
		b = protowire.AppendBytes(b, sub.body)
	}
	return b
}

// Update changes nothing a running VM cannot change: its vCPUs and memory
// are fixed at boot (Firecracker hot-adds neither), and the guest has no
// cgroup per container to enforce a container's share of them. An update
// that asks for no resources is accepted; any other is refused, saying
// what was asked and why.
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	if _, err := s.task(r.ID); err != nil {
		return nil, err
	}
	if r.Resources == nil || len(r.Resources.Value) == 0 {
		return &emptypb.Empty{}, nil
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.Value, &res); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "update of task %s: resources of type %s: %v", r.ID, r.Resources.TypeUrl, err)
	}
	var asked []string
	if c := res.CPU; c != nil && (c.Quota != nil || c.Shares != nil || c.Cpus != "" || c.Period != nil) {
		asked = append(asked, "CPU")
	}
	if m := res.Memory; m != nil && (m.Limit != nil || m.Reservation != nil || m.Swap != nil) {
		asked = append(asked, "memory")
	}
	if res.Pids != nil {
		asked = append(asked, "pids")
	}
	if res.BlockIO != nil || len(res.HugepageLimits) > 0 || len(res.Unified) > 0 || len(res.Devices) > 0 {
		asked = append(asked, "other")
	}
	if len(asked) == 0 {
		return &emptypb.Empty{}, nil
	}
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented,
		"kindling: update of task %s's %s limits: a microVM's vCPUs and memory are fixed at boot, and the guest does not enforce per-container limits; recreate the pod with the new limits",
		r.ID, strings.Join(asked, ", "))
}
