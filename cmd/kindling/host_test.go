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
	"github.com/kindling-vm/kindling/server"
)

// startServer serves a runtime on a fresh root on a Unix socket, as
// kindlingd does, and returns the runtime and the socket's address.
func startServer(t *testing.T) (*sandbox.Runtime, string) {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith is startServer with edit, if set, changing the server's
// config first (its Runtime is set).
func startServerWith(t *testing.T, edit func(*server.Config)) (*sandbox.Runtime, string) {
	t.Helper()
	t.Setenv(sandbox.EnvFirecracker, fakeFirecracker(t))
	root := testutil.ShortTempDir(t)
	rt, err := sandbox.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{Runtime: rt}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := server.New(context.Background(), cfg)
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
		ctx := context.Background()
		infos, _ := rt.List(ctx, sandbox.ListOptions{})
		for _, in := range infos {
			t.Errorf("sandbox %s left behind", in.ID)
			_ = rt.Remove(ctx, in.ID, true)
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-done
		srv.Close()
	})
	return rt, "unix://" + sock
}

// The CLI drives a server's sandboxes with --host (or $KINDLING_HOST):
// what it makes there is the server's, not the local root's; commands of
// the local root only say so.
func TestHost(t *testing.T) {
	rt, addr := startServer(t)
	local := testutil.ShortTempDir(t)
	cli := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := exitCode(run(context.Background(), append([]string{"--root", local}, args...), &out, &errb), &errb)
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
	if out := must("--host", addr, "run", "-d", "--demo", "idle", "--name", "web", "--label", "tier=front"); strings.TrimSpace(out) != "web" {
		t.Fatalf("run -d printed %q", out)
	}
	if in, err := rt.Inspect(context.Background(), "web"); err != nil || in.Status != sandbox.Running {
		t.Fatalf("the server's runtime: %+v, %v", in.Status, err)
	}
	t.Setenv("KINDLING_HOST", addr)
	var infos []sandbox.Info
	if err := json.Unmarshal([]byte(must("ps", "--json")), &infos); err != nil || len(infos) != 1 || infos[0].ID != "web" {
		t.Fatalf("ps --json: %+v, %v", infos, err)
	}
	must("pause", "web")
	must("resume", "web")
	if out := must("inspect", "web"); !strings.Contains(out, `"status": "running"`) {
		t.Errorf("inspect: %s", out)
	}
	if out := must("console", "web"); out == "" {
		t.Error("console printed nothing")
	}
	if _, errs, code := cli("inspect", "nosuch"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("inspect nosuch: exit %d: %s", code, errs)
	}
	if _, errs, code := cli("gc"); code == 0 || !strings.Contains(errs, "local state root only") {
		t.Errorf("gc with --host: exit %d: %s", code, errs)
	}
	must("stop", "web")
	must("rm", "web")
	// A server run without an image store says so.
	if _, errs, code := cli("image", "ls"); code != 1 || !strings.Contains(errs, "keeps no image store") {
		t.Errorf("image ls on a server without images: exit %d: %s", code, errs)
	}
	if infos, _ := rt.List(context.Background(), sandbox.ListOptions{}); len(infos) != 0 {
		t.Errorf("left on the server: %+v", infos)
	}
	// Without --host the CLI is daemonless and sees its own root only.
	t.Setenv("KINDLING_HOST", "")
	if out := must("--root", local, "ps", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("local ps: %s", out)
	}
	// A server that does not answer.
	if _, errs, code := cli("--host", "unix:///nonexistent/kindlingd.sock", "ps"); code != 1 || !strings.Contains(errs, "kindlingd") {
		t.Errorf("ps on a missing server: exit %d: %s", code, errs)
	}
}
