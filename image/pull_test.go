package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is a registry served in the test process, on loopback.
type testRegistry struct {
	srv  *httptest.Server
	host string // 127.0.0.1:port
	mu   sync.Mutex
	gets map[string]int // GET requests by path
	// user and pass, when set, are required (HTTP basic authentication).
	user, pass string
	// missing, when set, is a blob path answered 404 (a registry that lost
	// a layer).
	missing string
}

func newTestRegistry(t *testing.T, user, pass string) *testRegistry {
	t.Helper()
	r := &testRegistry{gets: map[string]int{}, user: user, pass: pass}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="kindling-test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if req.Method == http.MethodGet {
			r.mu.Lock()
			r.gets[req.URL.Path]++
			missing := r.missing
			r.mu.Unlock()
			if req.URL.Path == missing {
				http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) auth() remote.Option {
	if r.user == "" {
		return remote.WithAuth(authn.Anonymous)
	}
	return remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass})
}

func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, r.auth()); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

func (r *testRegistry) pushIndex(t *testing.T, repoTag string, imgs map[string]v1.Image) string {
	t.Helper()
	var adds []mutate.IndexAddendum
	for p, img := range imgs {
		os, arch, _ := strings.Cut(p, "/")
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}}})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, r.auth()); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	return ref.String()
}

func (r *testRegistry) blobGets(repo string, d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets["/v2/"+repo+"/blobs/"+d.String()]
}

// noDockerConfig points the docker config at an empty directory, so that
// the host's credentials play no part.
func noDockerConfig(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
}

func TestPull(t *testing.T) {
	needBuild(t)
	noDockerConfig(t)
	ctx := context.Background()
	reg := newTestRegistry(t, "", "")
	img := simpleImage(t, "pulled")
	ref := reg.push(t, "team/app:1.0", img)
	manifest, _ := img.Digest()
	cfg, _ := img.ConfigName()
	ls, _ := img.Layers()
	layerDigest, _ := ls[0].Digest()

	s := openStore(t)
	var events []Event
	im, err := s.Pull(ctx, ref, PullOptions{Progress: func(e Event) { events = append(events, e) }})
	if err != nil {
		t.Fatalf("Pull(%s): %v", ref, err)
	}
	if im.ID != cfg.String() || im.Digest != manifest.String() || len(im.Refs) != 1 || im.Refs[0] != ref {
		t.Errorf("image = %+v; want ID %s, digest %s, ref %s", im, cfg, manifest, ref)
	}
	fsck(t, im.RootFS[0].Path)
	if got := catFile(t, im.RootFS[0].Path, "/bin/app"); !strings.Contains(got, "pulled") {
		t.Errorf("/bin/app = %q", got)
	}
	var kinds []string
	var lastLayer Event
	for _, e := range events {
		if len(kinds) == 0 || kinds[len(kinds)-1] != string(e.Kind) {
			kinds = append(kinds, string(e.Kind))
		}
		if e.Kind == EventLayer {
			lastLayer = e
		}
	}
	if strings.Join(kinds, ",") != "resolved,layer,build,done" {
		t.Errorf("events %v, want resolved, layer…, build, done", kinds)
	}
	if !lastLayer.LayerDone || lastLayer.Bytes == 0 || lastLayer.Size == 0 || lastLayer.Digest != layerDigest.String() || lastLayer.Layers != 1 {
		t.Errorf("last layer event %+v", lastLayer)
	}
	if n := reg.blobGets("team/app", layerDigest); n != 1 {
		t.Errorf("layer fetched %d times, want 1", n)
	}

	// Pulled again: nothing is fetched but the manifest and configuration.
	events = nil
	if _, err := s.Pull(ctx, ref, PullOptions{Progress: func(e Event) { events = append(events, e) }}); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets("team/app", layerDigest); n != 1 {
		t.Errorf("layer fetched again (%d times)", n)
	}
	if len(events) < 2 || events[1].Kind != EventCached {
		t.Errorf("second pull events %+v, want cached", events)
	}
	// By digest.
	if im2, err := s.Pull(ctx, reg.host+"/team/app@"+manifest.String(), PullOptions{}); err != nil || im2.ID != im.ID {
		t.Errorf("pull by digest = %v, %v", im2.ID, err)
	}
}

func TestPullPlatforms(t *testing.T) {
	needBuild(t)
	noDockerConfig(t)
	ctx := context.Background()
	reg := newTestRegistry(t, "", "")
	amd := simpleImage(t, "amd64")
	arm := platformImage(t, "linux", "arm64", v1.Config{Cmd: []string{"/x"}}, layer(t, file("x", "arm", 0o755, 0, 0)))
	multi := reg.pushIndex(t, "multi:1", map[string]v1.Image{"linux/amd64": amd, "linux/arm64": arm})
	armOnly := reg.pushIndex(t, "armonly:1", map[string]v1.Image{"linux/arm64": arm})
	armPlain := reg.push(t, "armplain:1", arm)

	s := openStore(t)
	im, err := s.Pull(ctx, multi, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	amdDigest, _ := amd.Digest()
	if im.Digest != amdDigest.String() {
		t.Errorf("picked %s, want the amd64 manifest %s", im.Digest, amdDigest)
	}
	for _, ref := range []string{armOnly, armPlain} {
		_, err := s.Pull(ctx, ref, PullOptions{})
		if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "linux/arm64") {
			t.Errorf("Pull(%s) = %v, want ErrNotSupported naming linux/arm64", ref, err)
		}
		oneLine(t, err)
	}
	_, err = s.Pull(ctx, reg.host+"/nosuch:1", PullOptions{})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Pull of a missing image = %v, want ErrNotFound", err)
	}
	// A layer the registry cannot serve: a one-line error that is not
	// "corrupt", and nothing stored.
	lost := simpleImage(t, "lost")
	lostRef := reg.push(t, "lost:1", lost)
	ls, _ := lost.Layers()
	ld, _ := ls[0].Digest()
	reg.mu.Lock()
	reg.missing = "/v2/lost/blobs/" + ld.String()
	reg.mu.Unlock()
	_, err = s.Pull(ctx, lostRef, PullOptions{})
	if err == nil || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "fetch its layers") {
		t.Errorf("Pull with a lost layer = %v, want a fetch error", err)
	} else {
		oneLine(t, err)
	}
	_, err = s.Pull(ctx, "UPPER/Case::bad", PullOptions{})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Pull of a bad reference = %v, want ErrInvalid", err)
	}
	if list, _ := s.List(ctx); len(list) != 1 {
		t.Errorf("store holds %d images, want 1", len(list))
	}
}

// TestPullAuth pulls from a registry that wants credentials, with and
// without them in a docker config.
func TestPullAuth(t *testing.T) {
	needBuild(t)
	ctx := context.Background()
	reg := newTestRegistry(t, "kindling", "s3cret")
	ref := reg.push(t, "private/app:1", simpleImage(t, "private"))
	s := openStore(t)

	noDockerConfig(t)
	_, err := s.Pull(ctx, ref, PullOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "docker login") {
		t.Fatalf("anonymous Pull = %v, want a refusal saying to log in", err)
	}
	oneLine(t, err)
	if left := storeLeftovers(t, s); len(left) > 0 {
		t.Errorf("left: %v", left)
	}

	dc := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("kindling:s3cret"))
	conf := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, reg.host, auth)
	if err := os.WriteFile(filepath.Join(dc, "config.json"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dc)
	im, err := s.Pull(ctx, ref, PullOptions{})
	if err != nil {
		t.Fatalf("Pull with credentials: %v", err)
	}
	if got := catFile(t, im.RootFS[0].Path, "/bin/app"); !strings.Contains(got, "private") {
		t.Errorf("/bin/app = %q", got)
	}
}
