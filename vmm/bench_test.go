package vmm

import (
	"context"
	"testing"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func BenchmarkMergeKernelArgs(b *testing.B) {
	user := "console=ttyS0 quiet root=/dev/vdb ro init=/sbin/init -- arg1 arg2"
	for b.Loop() {
		MergeKernelArgs(DefaultKernelArgs, user)
	}
}

// BenchmarkStartStop boots the test guest under the fake Firecracker and
// stops it. The real measurements are kindling-bench's.
func BenchmarkStartStop(b *testing.B) {
	fc := testutil.FakeFirecracker(b)
	kernel := testutil.GuestKernel(b, guest.Options{Message: "bench", Mode: guest.Halt})
	ctx := context.Background()
	for b.Loop() {
		m, err := New(Config{Firecracker: fc, Kernel: kernel, RunDir: testutil.ShortTempDir(b)}, WithStopGrace(0))
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.Stop(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
