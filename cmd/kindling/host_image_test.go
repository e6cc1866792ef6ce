package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	gcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// The image commands through a server (--host): import (a path on the
// server's host) and pull (with the server's credentials) build into the
// server's store with the server's agent; ls, inspect and rm work there;
// the local state root gets nothing.
func TestHostImages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: building root filesystems needs root (owners, device nodes)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("skipping: building root filesystems needs e2fsprogs (mkfs.ext4)")
	}
	testutil.CheckLeaks(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := os.WriteFile(agent, append([]byte("\x7fELF"), bytes.Repeat([]byte("agent"), 100)...), 0o755); err != nil {
		t.Fatal(err)
	}
	rt, addr := startServerWith(t, func(c *server.Config) {
		c.ImageDir = filepath.Join(c.Runtime.Root(), image.StateRootDir)
		c.Agent = agent
	})
	root := rt.Root()

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	pulled, err := scriptImage("pulled")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := gcrremote.Write(ref, pulled); err != nil {
		t.Fatal(err)
	}
	imported, err := scriptImage("imported")
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("example.com/app:2")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(filepath.Join(dir, "app.tar"), tag, imported); err != nil {
		t.Fatal(err)
	}

	local := testutil.ShortTempDir(t) // the client's own state root: stays empty
	t.Setenv("KINDLING_ROOT", local)
	t.Setenv("KINDLING_AGENT", "")
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

	// A relative path means the same file on the server's host (one host).
	t.Chdir(dir)
	importedID := strings.TrimSpace(must("image", "import", "-q", "app.tar"))
	if !strings.HasPrefix(importedID, "sha256:") {
		t.Fatalf("import printed %q, want an image ID", importedID)
	}
	var events []map[string]any
	out := must("image", "pull", "--json", host+"/app:1")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("pull --json printed %q: %v", line, err)
		}
		events = append(events, e)
	}
	if len(events) < 2 || events[0]["event"] != "resolved" || events[len(events)-1]["event"] != "image" {
		t.Fatalf("pull --json events %v: want resolved first and the image last", events)
	}

	// The server's agent went in; the client's environment has none.
	var views []struct {
		ID     string `json:"id"`
		Refs   []string
		RootFS []struct {
			Agent string `json:"agent_sha256"`
			Path  string `json:"path"`
		} `json:"rootfs"`
		Users []struct{ Kind, Name string } `json:"users"`
	}
	if err := json.Unmarshal([]byte(must("image", "inspect", "example.com/app:2")), &views); err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 || views[0].ID != importedID || len(views[0].RootFS) != 1 || views[0].RootFS[0].Agent == "" {
		t.Fatalf("inspect through the server: %+v, want %s with a root filesystem with the agent", views, importedID)
	}
	if !strings.HasPrefix(views[0].RootFS[0].Path, filepath.Join(root, image.StateRootDir)) {
		t.Errorf("root filesystem %s is not in the server's store under %s", views[0].RootFS[0].Path, root)
	}
	ls := must("image", "ls")
	for _, want := range []string{"example.com/app:2", host + "/app:1"} {
		if !strings.Contains(ls, want) {
			t.Errorf("image ls through the server misses %s:\n%s", want, ls)
		}
	}

	// Refusals: --agent is the server's; unknown images are not found.
	if _, errs, code := cli("image", "import", "--agent", agent, "app.tar"); code != 2 || !strings.Contains(errs, "kindlingd --agent") {
		t.Errorf("import --agent through a server: exit %d: %s", code, errs)
	}
	if _, errs, code := cli("image", "inspect", "no-such:1"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("inspect of an unknown image through a server: exit %d: %s", code, errs)
	}
	if _, errs, code := cli("image", "import", filepath.Join(dir, "missing.tar")); code != 1 || !strings.Contains(errs, "missing.tar") {
		t.Errorf("import of a missing file through a server: exit %d: %s", code, errs)
	}

	// A sandbox of the server labelled with the image is its user.
	in, err := rt.Create(context.Background(), sandbox.Spec{Labels: map[string]string{"kindling.image": importedID}}, sandbox.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli("image", "rm", "example.com/app:2"); code != 1 || !strings.Contains(errs, "in use by sandbox "+in.ID) {
		t.Errorf("rm of an image in use through a server: exit %d: %s", code, errs)
	}
	if err := rt.Remove(context.Background(), in.ID, true); err != nil {
		t.Fatal(err)
	}
	must("image", "rm", "example.com/app:2", host+"/app:1")
	if out := must("image", "ls", "-q"); out != "" {
		t.Errorf("image ls after rm: %q", out)
	}
	if des, _ := os.ReadDir(local); len(des) != 0 {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Errorf("the client's own state root got %v", names)
	}
}
