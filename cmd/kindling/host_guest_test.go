package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// exec and cp through a server (--host), against the real agent of a
// simulated guest the server's runtime boots.
func TestHostExecAndCopy(t *testing.T) {
	if err := simGuestReady(); err != nil {
		t.Skip("skipping: " + err.Error())
	}
	_, addr := startServer(t)
	dir := t.TempDir()
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{})
	kernel := filepath.Join(dir, "vmlinux")
	if err := guest.WriteFile(kernel, guest.Options{Message: "not booted: the simulated guest runs init", Mode: guest.Halt}); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := exitCode(run(context.Background(), append([]string{"--host", addr}, args...), &out, &errb), &errb)
		return out.String(), errb.String(), code
	}
	must := func(args ...string) string {
		t.Helper()
		out, errs, code := cli(args...)
		if code != 0 {
			t.Fatalf("kindling %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	must("run", "-d", "--name", "box", "--agent", "--kernel", kernel, "--rootfs", img)
	defer must("rm", "-f", "box")
	if out := must("exec", "box", "--", "echo", "hello"); out != "hello\n" {
		t.Errorf("exec echo hello printed %q", out)
	}
	if _, errs, code := cli("exec", "box", "--", "sh", "-c", "echo oops >&2; exit 3"); code != 3 || errs != "oops\n" {
		t.Errorf("exec exit 3: exit %d, stderr %q", code, errs)
	}
	if _, errs, code := cli("exec", "box", "--", "no-such-program"); code != 127 || !strings.Contains(errs, "no-such-program") {
		t.Errorf("exec of a missing program: exit %d, stderr %q", code, errs)
	}
	if out := must("exec", "-e", "GREETING=hi", "-w", "/tmp", "-u", "user", "box", "--", "sh", "-c", "echo $GREETING $(pwd) $(id -u)"); out != "hi /tmp 1000\n" {
		t.Errorf("exec with env, dir, user printed %q", out)
	}

	// cp: a directory in, then back out.
	src := filepath.Join(dir, "site")
	if err := os.MkdirAll(filepath.Join(src, "css"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"index.html": "<h1>hi</h1>\n", "css/a.css": strings.Repeat("a{}\n", 20000)}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	must("cp", src, "box:/srv")
	if out := must("exec", "box", "--", "cat", "/srv/index.html"); out != files["index.html"] {
		t.Errorf("the copied file reads %q in the guest", out)
	}
	back := filepath.Join(dir, "back")
	must("cp", "box:/srv", back)
	for p, c := range files {
		b, err := os.ReadFile(filepath.Join(back, p))
		if err != nil || string(b) != c {
			t.Errorf("%s copied back: %d bytes, %v", p, len(b), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(back, "index.html")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode copied back: %v, %v", fi.Mode(), err)
	}
	if _, errs, code := cli("cp", "box:/no/such", dir); code == 0 || !strings.Contains(errs, "/no/such") {
		t.Errorf("cp of a missing guest file: exit %d: %s", code, errs)
	}
}
