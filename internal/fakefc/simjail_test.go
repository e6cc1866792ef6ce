package fakefc_test

import (
	"context"
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

// A simulated guest under the fake jailer runs in its own cgroup, as an
// unjailed one does (so that pause freezes it and the janitor ends it),
// not in the jail's cgroup, nor in the one the jailer was started in. It
// used to be moved out of its cgroup with the jail's: pause froze an empty
// cgroup, and a guest whose parent-death signal was lost outlived its
// killed fake.
func TestSimGuestJailedStaysInItsCgroup(t *testing.T) {
	needRoot(t)
	if len(cgroup2Mounts()) == 0 {
		t.Skip("skipping: no cgroup v2 hierarchy mounted")
	}
	// The jail's cgroup: in the v1 pids hierarchy where there is one (a
	// hybrid host), else in the v2 one.
	version, ctrls, base := "1", "pids", "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
		version, ctrls, base = "2", "", "/sys/fs/cgroup"
		if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err != nil {
			t.Skip("skipping: neither a v1 pids hierarchy nor a v2 one at /sys/fs/cgroup for the jail's cgroup")
		}
	}
	fc, jailer := testutil.FakeFirecracker(t), testutil.FakeJailer(t)
	img := simRootfs(t, true)
	chroots := testutil.ShortTempDir(t)
	id := "simjail"
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

	// The kernel and the root drive in the jail, the jail's uid's, as
	// kindling puts them there.
	jailImg := filepath.Join(root, "rootfs.ext4")
	copyTo := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dst, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	copyTo(img, jailImg)
	copyTo(writeFile(t, t.TempDir(), "vmlinux", "not a kernel the fake emulates"), filepath.Join(root, "vmlinux"))
	p.must(204, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`)
	p.must(204, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":"/vmlinux","boot_args":%q}`, simBootArgs))
	p.must(204, "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":false}`)
	p.must(204, "PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock"}`)
	p.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
	v := &simVM{proc: p, img: jailImg, uds: filepath.Join(root, "v.sock")}
	v.waitOutput("siminit: up")
	init := v.initPID(t)

	cgs := simCgroups(fake)
	if len(cgs) != 1 {
		t.Fatalf("cgroups of the jailed fake's guest: %v, want one\n%s", cgs, stdout)
	}
	if got, want := cgroupOf(t, init, ""), "/kindling-sim/"+filepath.Base(cgs[0]); got != want {
		t.Errorf("the guest's init is in the v2 cgroup %s, want its own, %s", got, want)
	}
	vmmCgroup := cgroupOf(t, fake.pid, ctrls)
	if want := "/" + parent + "/" + id; vmmCgroup != want {
		t.Fatalf("the jailed fake is in the cgroup %s, want the jail's, %s", vmmCgroup, want)
	}
	if version == "1" {
		if got := cgroupOf(t, init, ctrls); got == vmmCgroup {
			t.Errorf("the guest's init is in the jail's cgroup %s", got)
		}
	}
	js := janitors(fake)
	if len(js) != 1 {
		t.Fatalf("janitors of the jailed fake: %v, want one", js)
	}
	if got := cgroupOf(t, js[0], ctrls); got == vmmCgroup {
		t.Errorf("the janitor is in the jail's cgroup %s", got)
	}
	if a := v.ask(t, "ping"); a != "pong\n" {
		t.Errorf("ping: %q", a)
	}
	kill()
	checkGone(t, fake, init, jailImg)
}
