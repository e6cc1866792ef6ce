package fakefc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// cgroupOf returns process pid's cgroup in the hierarchy whose controllers
// field of /proc/PID/cgroup is ctrls ("" for v2, "pids" for v1's).
func cgroupOf(t *testing.T, pid int, ctrls string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[1] == ctrls {
			return f[2]
		}
	}
	t.Fatalf("process %d has no cgroup with controllers %q:\n%s", pid, ctrls, b)
	return ""
}

// jailedFake is a fake Firecracker started by the fake jailer, before its
// VM is configured.
type jailedFake struct {
	*proc
	root           string // the jail's root on the host
	uid            int    // the jail's uid and gid
	fake           fakeID
	kill           func() // ends the fake and waits for it
	version, ctrls string // of the jail's cgroup hierarchy (see cgroupOf)
	parent, id     string // the jail's cgroup is <parent>/<id>
}

// startJailed runs the fake under the fake jailer, as id, with its API
// socket at /api.sock in the jail, and waits until it answers. The
// jail's cgroup is in the v1 pids hierarchy where there is one (a hybrid
// host), else in the v2 one.
func startJailed(t *testing.T, id string) *jailedFake {
	t.Helper()
	if len(cgroup2Mounts()) == 0 {
		t.Skip("skipping: no cgroup v2 hierarchy mounted")
	}
	version, ctrls, base := "1", "pids", "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
		version, ctrls, base = "2", "", "/sys/fs/cgroup"
		if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err != nil {
			t.Skip("skipping: neither a v1 pids hierarchy nor a v2 one at /sys/fs/cgroup for the jail's cgroup")
		}
	}
	fc, jailer := testutil.FakeFirecracker(t), testutil.FakeJailer(t)
	chroots := testutil.ShortTempDir(t)
	parent := fmt.Sprintf("fakefc-test-%d", os.Getpid())
	uid := 40000 + os.Getpid()%10000
	root := filepath.Join(chroots, filepath.Base(fc), id, "root")
	t.Cleanup(func() {
		// After the process has gone (cleanups run last first).
		_ = os.Remove(filepath.Join(base, parent, id))
		_ = os.Remove(filepath.Join(base, parent))
	})

	cmd := exec.Command(jailer, "--id", id, "--exec-file", fc, "--uid", strconv.Itoa(uid), "--gid", strconv.Itoa(uid),
		"--chroot-base-dir", chroots, "--cgroup-version", version, "--cgroup", "pids.max=200", "--parent-cgroup", parent,
		"--", "--api-sock", "/api.sock")
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	kill := func() {
		_ = cmd.Process.Kill()
		<-done
	}
	t.Cleanup(kill)
	start, err := kunix.ProcessStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The jailer becomes the fake: same process.
	fake := fakeID{pid: cmd.Process.Pid, start: start}
	sock := filepath.Join(root, "api.sock")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no API socket %s after 10s\nstderr: %s", sock, stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := &proc{t: t, stdout: stdout, stderr: stderr, id: fake, client: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}, Timeout: 10 * time.Second}}
	t.Cleanup(p.client.CloseIdleConnections)
	return &jailedFake{proc: p, root: root, uid: uid, fake: fake, kill: kill, version: version, ctrls: ctrls, parent: parent, id: id}
}

// put writes a file of content at the in-jail path name, owned by owner
// with mode perm, and returns its path on the host.
func (j *jailedFake) put(t *testing.T, name string, content []byte, owner int, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(j.root, name)
	if err := os.WriteFile(p, content, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, owner, owner); err != nil {
		t.Fatal(err)
	}
	return p
}

// boot configures the jailed fake's VM with the simulated guest's image
// as its root drive (the jail's uid's, in the jail, as kindling puts it
// there), the drives drives (PUT bodies) and a vsock, starts it and waits
// for the guest's init.
func (j *jailedFake) boot(t *testing.T, drives ...string) *simVM {
	t.Helper()
	b, err := os.ReadFile(simRootfs(t, true))
	if err != nil {
		t.Fatal(err)
	}
	jailImg := j.put(t, "rootfs.ext4", b, j.uid, 0o600)
	j.put(t, "vmlinux", []byte("not a kernel the fake emulates"), j.uid, 0o600)
	j.must(204, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`)
	j.must(204, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":"/vmlinux","boot_args":%q}`, simBootArgs))
	j.must(204, "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":false}`)
	for _, d := range drives {
		var id struct {
			ID string `json:"drive_id"`
		}
		if err := json.Unmarshal([]byte(d), &id); err != nil {
			t.Fatal(err)
		}
		j.must(204, "PUT", "/drives/"+id.ID, d)
	}
	j.must(204, "PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock"}`)
	j.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
	v := &simVM{proc: j.proc, img: jailImg, uds: filepath.Join(j.root, "v.sock")}
	v.waitOutput("siminit: up")
	return v
}

// A simulated guest under the fake jailer runs in its own cgroup, as an
// unjailed one does (so that pause freezes it and the janitor ends it),
// not in the jail's cgroup, nor in the one the jailer was started in. It
// used to be moved out of its cgroup with the jail's: pause froze an empty
// cgroup, and a guest whose parent-death signal was lost outlived its
// killed fake.
func TestSimGuestJailedStaysInItsCgroup(t *testing.T) {
	needRoot(t)
	j := startJailed(t, "simjail")
	v := j.boot(t)
	init := v.initPID(t)

	cgs := simCgroups(j.fake)
	if len(cgs) != 1 {
		t.Fatalf("cgroups of the jailed fake's guest: %v, want one\n%s", cgs, j.stdout)
	}
	if got, want := cgroupOf(t, init, ""), "/kindling-sim/"+filepath.Base(cgs[0]); got != want {
		t.Errorf("the guest's init is in the v2 cgroup %s, want its own, %s", got, want)
	}
	vmmCgroup := cgroupOf(t, j.fake.pid, j.ctrls)
	if want := "/" + j.parent + "/" + j.id; vmmCgroup != want {
		t.Fatalf("the jailed fake is in the cgroup %s, want the jail's, %s", vmmCgroup, want)
	}
	if j.version == "1" {
		if got := cgroupOf(t, init, j.ctrls); got == vmmCgroup {
			t.Errorf("the guest's init is in the jail's cgroup %s", got)
		}
	}
	js := janitors(j.fake)
	if len(js) != 1 {
		t.Fatalf("janitors of the jailed fake: %v, want one", js)
	}
	if got := cgroupOf(t, js[0], j.ctrls); got == vmmCgroup {
		t.Errorf("the janitor is in the jail's cgroup %s", got)
	}
	if a := v.ask(t, "ping"); a != "pong\n" {
		t.Errorf("ping: %q", a)
	}
	j.kill()
	checkGone(t, j.fake, init, v.img)
}

// TestSimGuestJailedDrives: a jailed fake's simulated guest gets its drives
// other than the root (it used to fail its boot binding them: "bind drive
// at /dev/vdb: invalid argument"), and a PATCH of a drive's path_on_host
// swaps it (it used to fail with EPERM); the files are opened as the
// jail's uid through their in-jail paths, so one the uid may not write is
// refused for a writable drive, as Firecracker refuses it.
func TestSimGuestJailedDrives(t *testing.T) {
	needRoot(t)
	j := startJailed(t, "simdrives")
	j.put(t, "data.img", []byte("data drive"), j.uid, 0o600)
	j.put(t, "ro.img", []byte("read-only drive"), 0, 0o644)
	j.put(t, "slot.img", nil, j.uid, 0o600)
	j.put(t, "new.img", []byte("swapped in"), j.uid, 0o600)
	j.put(t, "roots.img", []byte("root's"), 0, 0o644)
	v := j.boot(t,
		`{"drive_id":"data","path_on_host":"/data.img","is_root_device":false,"is_read_only":false}`,
		`{"drive_id":"ro","path_on_host":"/ro.img","is_root_device":false,"is_read_only":true}`,
		`{"drive_id":"pool0","path_on_host":"/slot.img","is_root_device":false,"is_read_only":false}`)
	init := v.initPID(t)
	for _, a := range []struct{ cmd, want string }{
		{"cat /dev/vdb", "data drive"},
		{"write /dev/vdb written", "ok\n"},
		{"cat /dev/vdb", "written"},
		{"cat /dev/vdc", "read-only drive"},
		{"write /dev/vdc no", "error open /dev/vdc: read-only file system\n"},
		{"cat /dev/vdd", ""},
	} {
		if got := v.ask(t, a.cmd); got != a.want {
			t.Errorf("at boot: %s: %q, want %q", a.cmd, got, a.want)
		}
	}
	v.must(204, "PATCH", "/drives/pool0", `{"drive_id":"pool0","path_on_host":"/new.img"}`)
	if got := v.ask(t, "cat /dev/vdd"); got != "swapped in" {
		t.Errorf("after the swap: cat /dev/vdd: %q, want the new file", got)
	}
	code, body := v.do("PATCH", "/drives/pool0", `{"drive_id":"pool0","path_on_host":"/roots.img"}`)
	if code != 400 || !strings.Contains(body, "permission denied") {
		t.Errorf("PATCH of a writable drive to a file the jail's uid cannot write: %d %s, want 400, permission denied", code, body)
	}
	if got := v.ask(t, "cat /dev/vdd"); got != "swapped in" {
		t.Errorf("after a refused PATCH: cat /dev/vdd: %q, want the drive swapped in before", got)
	}
	if b, _ := os.ReadFile(filepath.Join(j.root, "data.img")); string(b) != "written" {
		t.Errorf("the data drive's file after the guest wrote it: %q", b)
	}
	j.kill()
	checkGone(t, j.fake, init, v.img)
}
