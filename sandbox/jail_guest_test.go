package sandbox

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestD4JailedGuestDialsTheJailSocket: the agent client of a jailed
// sandbox dials the vsock socket inside its chroot, where the jailed
// Firecracker made it, not the unjailed place in the sandbox directory.
// The guest has no agent, so the call reaches Firecracker's handshake and
// is told nothing listens, naming the socket in the jail.
func TestD4JailedGuestDialsTheJailSocket(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	idle := testutil.GuestKernel(t, guest.Options{Message: "jailed vsock", Mode: guest.Halt})
	id := "d4vsock"
	if _, err := r.Create(ctx, Spec{ID: id, Firecracker: fc, Kernel: idle, VsockCID: 3}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), id, true); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	in, err := r.Start(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if in.Spec.Jailer == "" || !strings.HasPrefix(in.VsockSocket, in.Chroot+"/") {
		t.Fatalf("jailer %q, vsock socket %s, chroot %s: want a jailed sandbox with its socket in the jail", in.Spec.Jailer, in.VsockSocket, in.Chroot)
	}
	_, err = r.StatFile(ctx, id, "/", FileOptions{})
	if !errors.Is(err, agent.ErrNoListener) || !strings.Contains(err.Error(), in.VsockSocket) {
		t.Fatalf("stat in a jailed guest without an agent: %v; want nothing listening on %s", err, in.VsockSocket)
	}
}
