package shim

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kindling-vm/kindling/agent/container"
)

// decodeFields reads a message of varint and bytes fields.
func decodeFields(t *testing.T, b []byte) (ints map[protowire.Number]uint64, subs map[protowire.Number][]byte) {
	t.Helper()
	ints, subs = map[protowire.Number]uint64{}, map[protowire.Number][]byte{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatal("bad varint")
			}
			ints[num], b = v, b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				t.Fatal("bad bytes")
			}
			subs[num], b = v, b[n:]
		default:
			t.Fatalf("field %d: unexpected wire type %d", num, typ)
		}
	}
	return ints, subs
}

// The metrics carry the guest's figures under the field numbers of
// containerd's cgroup v2 Metrics.
func TestEncodeMetricsV2(t *testing.T) {
	st := container.Stats{Pids: 3, UserUsec: 700, SystemUsec: 300, AnonBytes: 4 << 20, FileBytes: 1 << 20,
		ShmemBytes: 4096, LimitBytes: 512 << 20, PageFaults: 90, MajorFaults: 2}
	_, subs := decodeFields(t, encodeMetricsV2(st))
	pids, _ := decodeFields(t, subs[1])
	cpu, _ := decodeFields(t, subs[2])
	mem, _ := decodeFields(t, subs[4])
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"pids.current", pids[1], 3},
		{"cpu.usage_usec", cpu[1], 1000}, {"cpu.user_usec", cpu[2], 700}, {"cpu.system_usec", cpu[3], 300},
		{"memory.anon", mem[1], 4 << 20}, {"memory.file", mem[2], 1 << 20}, {"memory.shmem", mem[6], 4096},
		{"memory.pgfault", mem[18], 90}, {"memory.pgmajfault", mem[19], 2},
		{"memory.usage", mem[32], 5<<20 + 4096}, {"memory.usage_limit", mem[33], 512 << 20},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
}

// Update refuses what a VM cannot change, naming it; an update without
// resources is nothing to do.
func TestUpdate(t *testing.T) {
	s := NewService(Config{}, "ns", slog.New(slog.NewTextHandler(io.Discard, nil)), nil, func() {})
	s.tasks["c1"] = &taskState{id: "c1"}
	res := func(r specs.LinuxResources) *anypb.Any {
		b, _ := json.Marshal(r)
		return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: b}
	}
	limit := int64(256 << 20)
	quota := int64(50000)
	tests := []struct {
		name string
		req  *taskapi.UpdateTaskRequest
		want string // "" for accepted
	}{
		{"no resources", &taskapi.UpdateTaskRequest{ID: "c1", Annotations: map[string]string{"a": "b"}}, ""},
		{"empty resources", &taskapi.UpdateTaskRequest{ID: "c1", Resources: res(specs.LinuxResources{})}, ""},
		{"memory", &taskapi.UpdateTaskRequest{ID: "c1", Resources: res(specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})}, "task c1's memory limits: a microVM's vCPUs and memory are fixed at boot"},
		{"cpu and memory", &taskapi.UpdateTaskRequest{ID: "c1", Resources: res(specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota}, Memory: &specs.LinuxMemory{Limit: &limit}})}, "CPU, memory limits"},
		{"garbage", &taskapi.UpdateTaskRequest{ID: "c1", Resources: &anypb.Any{TypeUrl: "x", Value: []byte("{")}}, "resources of type x"},
		{"no task", &taskapi.UpdateTaskRequest{ID: "nope"}, "task nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Update(context.Background(), tt.req)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Update: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Update = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := s.Update(context.Background(), tests[2].req); !errdefs.IsNotImplemented(errdefs.FromGRPC(err)) {
		t.Errorf("Update of memory: %v, want NotImplemented", err)
	}
}
