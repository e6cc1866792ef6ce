package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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

// TestD4JailedAgentExec: a sandbox run under the (fake) jailer by default
// as root boots its simulated guest from the drive in its jail, and its
// agent answers exec and the file calls through the vsock socket inside
// the chroot; what the guest writes lands in the sandbox's root file.
func TestD4JailedAgentExec(t *testing.T) {
	asRootWithJailerDefault(t)
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r, in := simSandbox(t, testutil.AgentRootOptions{})
	if in.Spec.Jailer == "" || in.JailUID == 0 {
		t.Fatalf("jailer %q, uid %d: as root the sandbox was not jailed", in.Spec.Jailer, in.JailUID)
	}
	if !strings.HasPrefix(in.VsockSocket, in.Chroot+"/") {
		t.Errorf("vsock socket %s is not in the jail %s", in.VsockSocket, in.Chroot)
	}
	checkVMMJailed(t, in)
	code, out, errOut := run(t, r, in.ID, ExecRequest{Args: []string{"/bin/sh", "-c", "echo jailed; cat /proc/cmdline"}})
	if code != 0 || !strings.HasPrefix(out, "jailed\n") {
		t.Fatalf("exec: code %d, out %q, err %q", code, out, errOut)
	}
	ctx := context.Background()
	if err := r.PutFile(ctx, in.ID, "/tmp/in", strings.NewReader("into the jail"), FileOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, err := r.GetFile(ctx, in.ID, "/tmp/in", FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "into the jail" {
		t.Errorf("read back %q, %v", b, err)
	}
}

// checkVMMJailed fails the test unless the VMM of the running sandbox in
// runs as its jail's uid, with no effective capability, with its jail's
// chroot as its root.
func checkVMMJailed(t *testing.T, in Info) {
	t.Helper()
	if in.PID == 0 {
		t.Fatalf("sandbox %s has no VMM PID", in.ID)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.PID))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d\t%d\t%d\t%d", in.JailUID, in.JailUID, in.JailUID, in.JailUID)
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok && strings.TrimSpace(v) != want {
			t.Errorf("VMM uids %q, want %q", strings.TrimSpace(v), want)
		}
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok && strings.Trim(strings.TrimSpace(v), "0") != "" {
			t.Errorf("VMM effective capabilities %s, want none", strings.TrimSpace(v))
		}
	}
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", in.PID))
	if err != nil || !strings.HasPrefix(root, in.Chroot) {
		t.Errorf("VMM root %q (%v), want the jail %s", root, err, in.Chroot)
	}
}
