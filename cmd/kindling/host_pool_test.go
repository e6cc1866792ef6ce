package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// pool ls, set and rm through a server, whose template store holds base.
func TestHostPool(t *testing.T) {
	t.Setenv(sandbox.EnvFirecracker, fakeFirecracker(t))
	root := testutil.ShortTempDir(t)
	rt, err := sandbox.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := template.Open(rt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := rt.Create(ctx, sandbox.Spec{ID: "src", Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Create(ctx, "base", "src", template.Options{Stop: true}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Remove(ctx, "src", true); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{Runtime: rt, Templates: ts})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "kindlingd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := server.HTTPServer(srv.Handler(true), nil)
	done := make(chan struct{})
	go func() { _ = hs.Serve(ln); close(done) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-done
		srv.Close()
		infos, _ := rt.List(ctx, sandbox.ListOptions{})
		for _, in := range infos {
			t.Errorf("sandbox %s left behind", in.ID)
			_ = rt.Remove(ctx, in.ID, true)
		}
		if err := ts.Remove(ctx, "base", true); err != nil {
			t.Error(err)
		}
	})
	addr := "unix://" + sock
	cli := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := exitCode(run(ctx, args, &out, &errb), &errb)
		return out.String(), errb.String(), code
	}
	must := func(args ...string) string {
		t.Helper()
		out, errs, code := cli(append([]string{"--host", addr}, args...)...)
		if code != 0 {
			t.Fatalf("kindling %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	t.Setenv(remote.EnvHost, "")
	if _, errs, code := cli("pool", "ls"); code != 1 || !strings.Contains(errs, "--host") {
		t.Errorf("pool ls without --host: exit %d: %s", code, errs)
	}
	if _, errs, code := cli("--host", addr, "pool", "set", "base", "many"); code != 2 || !strings.Contains(errs, "SIZE") {
		t.Errorf("pool set with a bad size: exit %d: %s", code, errs)
	}
	if _, errs, code := cli("--host", addr, "pool", "set", "nosuch", "1"); code != 1 || !strings.Contains(errs, "nosuch") {
		t.Errorf("pool set of a missing template: exit %d: %s", code, errs)
	}
	if out := must("pool", "set", "base", "2", "--memory", "1G"); out != "base\n" {
		t.Errorf("pool set printed %q", out)
	}
	var pools []remote.Pool
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := json.Unmarshal([]byte(must("pool", "ls", "--json")), &pools); err != nil {
			t.Fatal(err)
		}
		if len(pools) == 1 && pools[0].Ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool never filled: %+v", pools)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pools[0].Size != 2 || pools[0].MemoryMiB != 1024 {
		t.Errorf("pool ls --json: %+v", pools[0])
	}
	id := strings.TrimSpace(must("run", "-d", "--template", "base"))
	must("rm", "-f", id)
	out := must("pool", "ls")
	if !strings.HasPrefix(out, "TEMPLATE") || !strings.Contains(out, "base") || !strings.Contains(out, "of 1GiB") {
		t.Errorf("pool ls:\n%s", out)
	}
	if err := json.Unmarshal([]byte(must("pool", "ls", "--json")), &pools); err != nil || pools[0].Hits != 1 {
		t.Errorf("after a run: %+v, %v", pools, err)
	}
	if out := must("pool", "rm", "base"); out != "base\n" {
		t.Errorf("pool rm printed %q", out)
	}
	if out := must("pool", "ls", "-q"); out != "" {
		t.Errorf("pool ls -q after rm: %q", out)
	}
}
