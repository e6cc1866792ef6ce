package server_test

import (
	"context"
	"net"
	"os"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

func TestMain(m *testing.M) {
	sandbox.MonitorMain() // the monitors the tests start are this binary
	// The tests set the fake's settings in FAKEFC: let them through to it.
	os.Setenv(sandbox.EnvPassEnv, "FAKEFC")
	testutil.Main(m)
}

// testKey is the API key of the test servers.
const testKey = "test-key-0123456789abcdef"

// cfgFirecracker, when set, is the Firecracker the next newRig uses
// instead of the fake (real-Firecracker variants set it).
var cfgFirecracker string

// rig is a server on a fresh state root, served on a Unix socket (trusted)
// and on a loopback TCP port (untrusted, needs testKey).
type rig struct {
	rt     *sandbox.Runtime
	tpl    *template.Store
	srv    *server.Server
	sock   string // the Unix socket
	url    string // http://127.0.0.1:PORT
	fc     string // the fake Firecracker
	client *remote.Client
}

// newRig starts a server. At cleanup it shuts the server down and fails
// the test if a sandbox was left.
func newRig(t *testing.T, cfg server.Config) *rig {
	t.Helper()
	testutil.CheckLeaks(t)
	r := &rig{fc: cfgFirecracker}
	if r.fc == "" {
		r.fc = testutil.FakeFirecracker(t)
	}
	cfgFirecracker = ""
	// The runtime runs only a Firecracker its caller configured: restores
	// and clones take the default one, so make it this rig's.
	t.Setenv(sandbox.EnvFirecracker, r.fc)
	root := testutil.ShortTempDir(t)
	var err error
	if r.rt, err = sandbox.Open(root); err != nil {
		t.Fatal(err)
	}
	if r.tpl, err = template.Open(r.rt); err != nil {
		t.Fatal(err)
	}
	cfg.Runtime, cfg.Templates = r.rt, r.tpl
	if cfg.APIKeys == nil {
		cfg.APIKeys = []string{testKey}
	}
	if r.srv, err = server.New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	r.sock = filepath.Join(root, "kindlingd.sock")
	ul, err := net.Listen("unix", r.sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.url = "http://" + tl.Addr().String()
	us := server.HTTPServer(r.srv.Handler(true), nil)
	ts := server.HTTPServer(r.srv.Handler(false), nil)
	done := make(chan struct{}, 2)
	go func() { _ = us.Serve(ul); done <- struct{}{} }()
	go func() { _ = ts.Serve(tl); done <- struct{}{} }()
	if r.client, err = remote.New(remote.Config{Host: "unix://" + r.sock}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		infos, err := r.rt.List(ctx, sandbox.ListOptions{})
		if err != nil {
			t.Errorf("list at cleanup: %v", err)
		}
		for _, in := range infos {
			t.Errorf("sandbox %s (%s) left behind", in.ID, in.Status)
			if err := r.rt.Remove(ctx, in.ID, true); err != nil {
				t.Errorf("remove leftover %s: %v", in.ID, err)
			}
		}
		r.client.Close()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = us.Shutdown(sctx)
		_ = ts.Shutdown(sctx)
		<-done
		<-done
		r.srv.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	return r
}

// idleSpec is a sandbox running the demo guest, which stays up.
func (r *rig) idleSpec(id string) sandbox.Spec {
	return sandbox.Spec{ID: id, Demo: sandbox.DemoIdle, Firecracker: r.fc}
}

// haltGuest is a test guest kernel that prints msg and stays up.
func haltGuest(t *testing.T, msg string) string {
	return testutil.GuestKernel(t, guest.Options{Message: msg, Mode: guest.Halt})
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serve serves h on a fresh Unix socket until the test ends and returns
// the socket's address.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	ln, err := net.Listen("unix", sock)
	must(t, err)
	hs := server.HTTPServer(h, nil)
	done := make(chan struct{})
	go func() { _ = hs.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-done
	})
	return "unix://" + sock
}

// clientFor is a client of the server at addr, closed at the test's end.
func clientFor(t *testing.T, addr string) *remote.Client {
	t.Helper()
	c, err := remote.New(remote.Config{Host: addr})
	must(t, err)
	t.Cleanup(c.Close)
	return c
}
