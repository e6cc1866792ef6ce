package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestGuestCloneReinit restores two clones from one snapshot of an agent
// sandbox and checks each was initialised as itself: its own hostname,
// its own token (the other clone's is refused), and its agent answering
// with it. On the simulated guest a restore boots the agent afresh from
// the image, so this proves the host's side of re-init (the Init call
// after every start, with fresh entropy and the clone's identity); that
// two clones' kernels then draw different random bytes, and that a
// restored guest's clock is set, only a real VM can show
// (TestGuestRealVM).
func TestGuestCloneReinit(t *testing.T) {
	// Clones need a vsock socket of their own: the snapshot names it
	// relative to the sandbox's directory, so a release without vsock
	// overrides on restore (< 1.16) gives each one too.
	t.Setenv("FAKEFC", `{"version":"1.7.0"}`)
	t.Setenv(EnvPassEnv, "FAKEFC") // to the monitors, and the fakes they spawn
	r, in := simSandbox(t, testutil.AgentRootOptions{})
	ctx := context.Background()
	snap := filepath.Join(t.TempDir(), "snap")
	if _, err := r.Snapshot(ctx, in.ID, snap, SnapshotOptions{Own: true}); err != nil {
		t.Fatal(err)
	}
	// The snapshot holds the parent's token (as its memory would), 0600.
	if fi, err := os.Stat(filepath.Join(snap, tokenName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot token: %v, %v", fi, err)
	}
	parent, _ := readSecret(in.Dir, tokenName)
	// The source keeps running while its clones start, each on a vsock
	// socket of its own.
	var clones []Info
	for _, id := range []string{"clone-a", "clone-b"} {
		t.Cleanup(func() { checkSimLeftovers(t, id, filepath.Join(r.Root(), id)) })
		c, err := r.Restore(ctx, snap, RestoreOptions{ID: id, CopyOwnedDrives: true, Firecracker: in.Spec.Firecracker})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Remove(context.Background(), id, true) })
		clones = append(clones, c)
	}
	tokens := map[string]string{}
	for _, c := range clones {
		code, out, _ := run(t, r, c.ID, ExecRequest{Args: []string{"hostname"}})
		if code != 0 || out != c.ID+"\n" {
			t.Errorf("clone %s: hostname %q", c.ID, out)
		}
		tok, err := readSecret(c.Dir, tokenName)
		if err != nil || tok == "" || tok == parent {
			t.Fatalf("clone %s: token %q (%v): want its own", c.ID, tok, err)
		}
		if _, err := os.Stat(filepath.Join(c.Dir, tokenParentName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("clone %s: the parent's token is still kept after init: %v", c.ID, err)
		}
		tokens[c.ID] = tok
	}
	if tokens["clone-a"] == tokens["clone-b"] {
		t.Fatal("the clones share a token")
	}
	// Clone b refuses clone a's token and the parent's; the parent still
	// answers with its own.
	if code, out, _ := run(t, r, in.ID, ExecRequest{Args: []string{"hostname"}}); code != 0 || out != in.ID+"\n" {
		t.Errorf("the source after cloning: hostname %q", out)
	}
	for _, tok := range []string{tokens["clone-a"], parent} {
		c, err := agent.New(agent.Config{VsockPath: clones[1].VsockSocket, AccessToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Stat(ctx, "/", agent.FileOptions{})
		c.Close()
		if !errors.Is(err, agent.ErrAccessDenied) {
			t.Errorf("clone-b with another sandbox's token: %v, want ErrAccessDenied", err)
		}
	}
}
