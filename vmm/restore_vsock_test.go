package vmm

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// vsockSource starts a VM with a vsock socket v.sock in its run directory
// on the fake playing release ver, and snapshots it; the VM runs on.
func vsockSource(t *testing.T, ver string) (backend, Config, Snapshot) {
	t.Helper()
	b := backend{name: "fake", path: testutil.FakeFirecracker(t), fakeSettings: `{"version":"` + ver + `"}`}
	cfg := testConfig(t, b, "vsock source", guest.Halt)
	cfg.Vsock = &Vsock{CID: 3, Path: filepath.Join(cfg.RunDir, "v.sock")}
	m := startMachine(t, cfg)
	snap, err := m.CreateSnapshot(context.Background(), SnapshotOptions{Dir: filepath.Join(cfg.RunDir, "snap"), PauseAround: true})
	if err != nil {
		t.Fatal(err)
	}
	return b, cfg, snap
}

// TestRestoreVsockWhileSourceRuns restores a VM with a vsock device onto a
// socket of its own while the snapshotted VM still serves the snapshot's
// socket (a template's source while its clones start): the restore checks
// and uses its own socket and leaves the source's alone.
func TestRestoreVsockWhileSourceRuns(t *testing.T) {
	testutil.CheckLeaks(t)
	b, cfg, snap := vsockSource(t, "1.16.0")
	_, own := restoreOwnVsock(t, b, cfg, snap)
	checkSockets(t, own, cfg.Vsock.Path)
}

// restoreOwnVsock restores snap (of vsockSource's VM, configured like
// cfg) into a new run directory with the vsock socket v.sock there, and
// checks the restored VMM says so; the VMM is stopped when the test ends.
func restoreOwnVsock(t *testing.T, b backend, cfg Config, snap Snapshot) (*Machine, string) {
	t.Helper()
	rdir := testutil.ShortTempDir(t)
	own := filepath.Join(rdir, "v.sock")
	c, err := Restore(context.Background(), RestoreConfig{Snapshot: snap, Resume: true,
		Config: Config{Firecracker: b.path, RunDir: rdir, Env: cfg.Env, Vsock: &Vsock{CID: 3, Path: own}}})
	if err != nil {
		t.Fatalf("restore beside the running source: %v", err)
	}
	t.Cleanup(func() { stopAndCheck(t, c) })
	if got := c.Config().Vsock.Path; got != own {
		t.Errorf("restored vsock socket %q, want %q", got, own)
	}
	return c, own
}

// checkSockets fails the test unless every path is a Unix socket.
func checkSockets(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if fi, err := os.Lstat(p); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Errorf("vsock socket %s: %v, %v", p, fi, err)
		}
	}
}

// TestRestoreVsockOwnSocketAnyRelease: a VMM without a jail is given its
// vsock socket by a path relative to its run directory, so the snapshot
// names it so and every restore binds a socket of its own, in its own run
// directory, on a release that cannot override the socket on load (the
// fake plays 1.14.2 and 1.7.0) — also the restore of a restored VMM.
func TestRestoreVsockOwnSocketAnyRelease(t *testing.T) {
	testutil.CheckLeaks(t)
	for _, ver := range []string{"1.14.2", "1.7.0"} {
		t.Run(ver, func(t *testing.T) {
			b, cfg, snap := vsockSource(t, ver)
			if snap.VsockName != "v.sock" || !snap.VsockPerRestore() {
				t.Fatalf("snapshot's vsock name %q, want v.sock", snap.VsockName)
			}
			first, own1 := restoreOwnVsock(t, b, cfg, snap)
			_, own2 := restoreOwnVsock(t, b, cfg, snap)
			checkSockets(t, own1, own2, cfg.Vsock.Path)
			// A snapshot of a restored VMM names the socket as relative.
			again, err := first.CreateSnapshot(context.Background(), SnapshotOptions{Dir: filepath.Join(testutil.ShortTempDir(t), "again"), PauseAround: true})
			if err != nil {
				t.Fatal(err)
			}
			if again.VsockName != "v.sock" {
				t.Errorf("snapshot of a restored VMM: vsock name %q, want v.sock", again.VsockName)
			}
			_, own3 := restoreOwnVsock(t, b, cfg, again)
			checkSockets(t, own3)
		})
	}
}
