package vmm

import (
	"context"
	"slices"
	"testing"

	"github.com/kindling-vm/kindling/internal/guest"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

func TestVCPUThreads(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(string(rune('0'+n)), func(t *testing.T) {
			backends(t, "", func(t *testing.T, b backend) {
				cfg := testConfig(t, b, "threads", guest.Halt)
				cfg.VCPUs = n
				m := startMachine(t, cfg)
				tids, err := m.VCPUThreads(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if len(tids) != n {
					t.Fatalf("VCPUThreads = %v, want %d threads", tids, n)
				}
				pid, _ := m.PID()
				names, err := kunix.ThreadNames(pid)
				if err != nil {
					t.Fatal(err)
				}
				for i, tid := range tids {
					if want := "fc_vcpu " + string(rune('0'+i)); names[tid] != want {
						t.Errorf("thread %d is %q, want %q", tid, names[tid], want)
					}
				}
			})
		})
	}
}

func TestVCPUThreadsOrder(t *testing.T) {
	names := map[int]string{
		100: "firecracker", 101: "fc_api", 105: "fc_vcpu 10", 103: "fc_vcpu 2",
		102: "fc_vcpu 0", 104: "fc_vcpu 1", 106: "fc_vcpu x",
	}
	if got, want := vcpuThreads(names), []int{102, 104, 103, 105}; !slices.Equal(got, want) {
		t.Errorf("vcpuThreads = %v, want %v", got, want)
	}
	if got := vcpuThreads(nil); len(got) != 0 {
		t.Errorf("vcpuThreads(nil) = %v", got)
	}
}
