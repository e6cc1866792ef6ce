package unix

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestUserACLGrantAndRevoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: setting an ACL for another uid needs root")
	}
	dir := t.TempDir()
	// The directories must let the other uid through; only the file's
	// permissions are under test.
	for d := dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	const uid = 1610612999
	if err := GrantUserACL(path, uid, ACLRead|ACLWrite); err != nil {
		if errorsIsNotSupported(err) {
			t.Skipf("skipping: no POSIX ACLs on %s: %v", path, err)
		}
		t.Fatal(err)
	}
	if ok, err := HasUserACL(path, uid); err != nil || !ok {
		t.Fatalf("HasUserACL after grant = %v, %v; want true", ok, err)
	}
	// The grant lets that uid write the file, which it could not before.
	if err := writeAs(path, uid); err != nil {
		t.Fatalf("write as uid %d after the grant: %v", uid, err)
	}
	if err := RevokeUserACL(path, uid); err != nil {
		t.Fatal(err)
	}
	if ok, err := HasUserACL(path, uid); err != nil || ok {
		t.Fatalf("HasUserACL after revoke = %v, %v; want false", ok, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode after revoke = %v, want 0640 (the mode before the grant)", fi.Mode().Perm())
	}
	if err := writeAs(path, uid); err == nil {
		t.Fatalf("uid %d can still write after the revoke", uid)
	}
	if err := RevokeUserACL(path, uid); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if err := RevokeUserACL(path+".gone", uid); err != nil {
		t.Fatalf("revoke on a missing file: %v", err)
	}
}

func errorsIsNotSupported(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP)
}

// writeAs opens path for writing in a child process running as uid.
func writeAs(path string, uid int) error {
	p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exec 3>>\"$0\"", path}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}},
	})
	if err != nil {
		return err
	}
	st, err := p.Wait()
	if err != nil {
		return err
	}
	if !st.Success() {
		return &os.PathError{Op: "open as another uid", Path: path, Err: syscall.EACCES}
	}
	return nil
}
