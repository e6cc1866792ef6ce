package template

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// TestD4BuildAndCloneJailed: as root, where the jailer is the default, a
// template is built from an image (its builder jailed, its setup command
// run through the agent in the jail) and its clones run jailed too, each
// reaching its agent through the vsock socket in its own jail.
func TestD4BuildAndCloneJailed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jailer policy applies to root")
	}
	t.Setenv(sandbox.EnvNoJailer, "")
	t.Setenv("KINDLING_JAILER", testutil.FakeJailer(t))
	r := newImageRig(t)
	ctx := context.Background()
	if _, err := r.tpl.Build(ctx, "jailed", BuildOptions{Spec: r.spec, Image: r.im.ID,
		Run: []string{"echo built-by-$(id -u) > /srv/motd"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.tpl.Remove(context.Background(), "jailed", true); err != nil {
			t.Errorf("remove template: %v", err)
		}
	})
	for _, id := range []string{"j1", "j2"} {
		in, err := r.tpl.Run(ctx, "jailed", CloneOptions{ID: id, Firecracker: r.fc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.rt.Remove(context.Background(), id, true); err != nil {
				t.Errorf("remove %s: %v", id, err)
			}
		})
		if in.Spec.Jailer == "" || in.JailUID == 0 || !strings.HasPrefix(in.VsockSocket, in.Chroot+"/") {
			t.Fatalf("clone %s: jailer %q, uid %d, vsock %s, chroot %s: want it jailed", id, in.Spec.Jailer, in.JailUID, in.VsockSocket, in.Chroot)
		}
		code, out := execOut(t, r.rt, id, "sh", "-c", "cat /srv/motd; hostname")
		if code != 0 || out != "built-by-1000\n"+id+"\n" {
			t.Errorf("clone %s: exit %d, output %q; want the setup's file and its own hostname", id, code, out)
		}
	}
}
