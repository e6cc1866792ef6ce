package testutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FakeJailer returns the path of the fake jailer (package fakefc's
// JailerMain): a link named fake-jailer to the fake Firecracker, which
// plays the jailer under that name. It jails the fake Firecracker (whose
// file name holds "firecracker") for real: chroot, cgroup, uid. It skips
// the test when not run as root, which the jailer needs.
func FakeJailer(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the jailer needs root")
	}
	fc := FakeFirecracker(t)
	link := filepath.Join(filepath.Dir(fc), "fake-jailer")
	if err := os.Symlink(filepath.Base(fc), link); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatalf("link the fake jailer: %v", err)
	}
	return link
}
