package server_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// TestD4JailedThroughServer: kindlingd run as root, where the jailer is
// the default, creates jailed sandboxes: one created through the API runs
// its guest under the (fake) jailer and answers exec through the agent in
// the jail; a template made from it fills a warm pool with jailed clones,
// and a claimed clone answers exec too.
func TestD4JailedThroughServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jailer policy applies to root")
	}
	testutil.NeedSimulatedGuest(t)
	t.Setenv(sandbox.EnvNoJailer, "")
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	// Clones reach the agent on a vsock socket of their own, in their
	// jails: the fake plays 1.14.2, which cannot override it on load.
	t.Setenv("FAKEFC", `{"version":"1.14.2"}`)
	r := newRig(t, server.Config{Pools: map[string]int{"jt": 1}})
	// Run last: once every sandbox of the root is gone, nothing of their
	// jails is left (the template's shared memory copy included).
	t.Cleanup(func() {
		if left := sandbox.JailLeftoversOfRoot(r.rt.Root()); len(left) > 0 {
			t.Errorf("the root's jails left %q", left)
		}
	})
	ctx := context.Background()
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{})
	_, err := r.client.Create(ctx, sandbox.Spec{ID: "js", Kernel: haltGuest(t, emulatedMark), KernelArgs: testutil.AgentBootArgs,
		Firecracker: r.fc, Rootfs: &sandbox.Disk{Path: img}, MemoryMiB: 64, VsockCID: 3}, sandbox.CreateOptions{})
	must(t, err)
	removed := false
	t.Cleanup(func() {
		if !removed {
			_ = r.rt.Remove(context.Background(), "js", true)
		}
	})
	_, err = r.client.Start(ctx, "js")
	must(t, err)
	jailed := func(id string) {
		t.Helper()
		in, err := r.rt.Inspect(ctx, id)
		must(t, err)
		if in.Spec.Jailer == "" || in.JailUID == 0 || !strings.HasPrefix(in.VsockSocket, in.Chroot+"/") {
			t.Fatalf("sandbox %s: jailer %q, uid %d, vsock %s, chroot %s: want it jailed", id, in.Spec.Jailer, in.JailUID, in.VsockSocket, in.Chroot)
		}
	}
	jailed("js")
	var code int
	var out string
	waitFor(t, "exec through the server", func() bool {
		p, err := r.client.Exec(ctx, "js", sandbox.ExecRequest{Args: []string{"true"}})
		if err != nil {
			return false
		}
		defer p.Close()
		c, err := p.Wait(ctx)
		return err == nil && c == 0
	})
	code, out, _ = execOut(t, r.client, "js", sandbox.ExecRequest{Args: []string{"sh", "-c", "echo jailed > /tmp/mark; cat /tmp/mark"}})
	if code != 0 || out != "jailed\n" {
		t.Fatalf("exec: %d %q", code, out)
	}

	_, err = r.client.CreateTemplate(ctx, "jt", "js", true)
	must(t, err)
	must(t, r.client.Remove(ctx, "js", true))
	removed = true
	t.Cleanup(func() {
		dropPool(t, r, "jt")
		must(t, r.tpl.Remove(context.Background(), "jt", true))
	})
	waitFor(t, "a ready clone in the pool", func() bool { return poolReady(t, r, "jt", 1) })
	in, err := r.client.RunTemplate(ctx, "jt", template.CloneOptions{})
	must(t, err)
	t.Cleanup(func() { _ = r.rt.Remove(context.Background(), in.ID, true) })
	if in.Spec.Labels[server.PoolLabel] != "jt" {
		t.Errorf("the clone did not come from the pool: %+v", in.Spec.Labels)
	}
	jailed(in.ID)
	code, out, _ = execOut(t, r.client, in.ID, sandbox.ExecRequest{Args: []string{"hostname"}})
	if code != 0 || out != in.ID+"\n" {
		t.Errorf("exec in the claimed clone: %d %q", code, out)
	}
	must(t, r.client.Remove(ctx, in.ID, true))
}
