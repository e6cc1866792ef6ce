package vmmproc

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// readAs reports whether uid can read path (cat run as uid).
func readAs(t *testing.T, uid int, path string) bool {
	t.Helper()
	cmd := exec.Command("cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	return cmd.Run() == nil
}

// Two jails share one copy of a file neither uid can read, each reading it
// through its ACL entry; the source is not touched; each release revokes
// its uid's entry; a copy no jail links is kept while its source is
// unchanged and there, and goes when it is not, or at a purge. A changed
// source gets a copy of its own.
func TestStageShared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (ACLs for other uids, reading as them)")
	}
	top := t.TempDir()
	// The other uids walk to the jails' files (t.TempDir's are 0700).
	for _, d := range []string{filepath.Dir(top), top} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(top, "mem")
	if err := os.WriteFile(src, []byte("guest memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(top, "shared")
	const uidA, uidB, uidC = 64001, 64002, 64003
	var jails []string
	for _, name := range []string{"a", "b"} {
		d := filepath.Join(top, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		jails = append(jails, filepath.Join(d, "snapshot.mem"))
	}
	pa, err := StageShared(shared, src, jails[0], uidA)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		t.Skipf("no POSIX ACLs on %s: %v", top, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	pb, err := StageShared(shared, src, jails[1], uidB)
	if err != nil {
		t.Fatal(err)
	}
	if pa != pb || filepath.Dir(pa) != shared {
		t.Fatalf("the jails' copies are %s and %s, want one in %s", pa, pb, shared)
	}
	fa, _ := os.Stat(jails[0])
	fb, _ := os.Stat(jails[1])
	if !os.SameFile(fa, fb) {
		t.Errorf("the jails hold two files, want links to one copy")
	}
	if !readAs(t, uidA, jails[0]) || !readAs(t, uidB, jails[1]) {
		t.Errorf("a jail's uid cannot read its link of the shared copy")
	}
	if readAs(t, uidC, jails[0]) {
		t.Errorf("uid %d, with no entry, reads the shared copy", uidC)
	}
	if ok, _ := kunix.HasUserACL(src, uidA); ok {
		t.Errorf("the source got an ACL entry")
	}

	// A changed source is copied again, beside the copy in use.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(src, []byte("guest memory, later"), 0o600); err != nil {
		t.Fatal(err)
	}
	jc := filepath.Join(top, "a", "later.mem")
	pc, err := StageShared(shared, src, jc, uidA)
	if err != nil {
		t.Fatal(err)
	}
	if pc == pa {
		t.Errorf("a changed source reused the copy of its old content")
	}
	if b, _ := os.ReadFile(jc); string(b) != "guest memory, later" {
		t.Errorf("the new copy holds %q", b)
	}

	// Jail a ends: its links go, then its release. The copy of the
	// source's new content is kept for the next jail though none links it;
	// the old content's copy is still jail b's.
	os.Remove(jails[0])
	os.Remove(jc)
	if err := ReleaseShared(shared, uidA); err != nil {
		t.Fatal(err)
	}
	if ok, _ := kunix.HasUserACL(pa, uidA); ok {
		t.Errorf("uid %d's entry is left after its release", uidA)
	}
	if ok, _ := kunix.HasUserACL(pa, uidB); !ok {
		t.Errorf("jail a's release took jail b's entry")
	}
	if ok, _ := kunix.HasUserACL(pc, uidA); ok {
		t.Errorf("uid %d's entry is left on the copy kept", uidA)
	}
	if _, err := os.Stat(pc); err != nil {
		t.Errorf("the copy of the current source is gone with its last jail: %v", err)
	}
	// Jail b ends: the copy of a content the source no longer has goes.
	os.Remove(jails[1])
	if err := ReleaseShared(shared, uidB); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pa); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the copy of the source's old content is left: %v", err)
	}
	// The next jail links the kept copy.
	jd := filepath.Join(top, "b", "again.mem")
	if pd, err := StageShared(shared, src, jd, uidB); err != nil || pd != pc {
		t.Errorf("stage after the copy was kept: %s, %v; want %s", pd, err, pc)
	}
	os.Remove(jd)
	if err := ReleaseShared(shared, uidB); err != nil {
		t.Fatal(err)
	}
	// The root's last sandbox gone: nothing is kept.
	if err := PurgeShared(shared); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(shared); len(ents) != 0 {
		t.Errorf("shared copies left after the purge: %v", ents)
	}
	// A removed source: its copy goes at the next release.
	if _, err := StageShared(shared, src, jd, uidB); err != nil {
		t.Fatal(err)
	}
	os.Remove(jd)
	os.Remove(src)
	if err := ReleaseShared(shared, uidB); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(shared); len(ents) != 0 {
		t.Errorf("shared copies of a removed source left: %v", ents)
	}
	if err := ReleaseShared(filepath.Join(top, "none"), uidB); err != nil {
		t.Errorf("release in a directory that is not there: %v", err)
	}
}
