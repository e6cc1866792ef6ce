package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResolveAndRemove(t *testing.T) {
	needBuild(t)
	ctx := context.Background()
	s := openStore(t)
	a := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "a"), "alpha:1"), ImportOptions{Tags: []string{"alpha:latest", "registry.example:5000/team/alpha:v1"}})
	b := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "b"), "beta:1"), ImportOptions{})
	if a.ID == b.ID {
		t.Fatal("two images, one ID")
	}
	wantRefs := []string{"index.docker.io/library/alpha:1", "index.docker.io/library/alpha:latest", "registry.example:5000/team/alpha:v1"}
	if strings.Join(a.Refs, " ") != strings.Join(wantRefs, " ") {
		t.Errorf("Refs = %v, want %v", a.Refs, wantRefs)
	}
	hexA := strings.TrimPrefix(a.ID, "sha256:")
	for _, name := range []string{"alpha:1", "alpha", "docker.io/library/alpha:1", "registry.example:5000/team/alpha:v1", a.ID, hexA, hexA[:12], "sha256:" + hexA[:8]} {
		im, err := s.Resolve(ctx, name)
		if err != nil || im.ID != a.ID {
			t.Errorf("Resolve(%q) = %s, %v; want %s", name, im.ID, err, a.ID)
		}
	}
	for _, tt := range []struct {
		name string
		kind error
	}{
		{"gamma:1", ErrNotFound},
		{"sha256:" + strings.Repeat("0", 64), ErrNotFound},
		{"", ErrInvalid},
		{hexA[:3], ErrNotFound}, // too short to be a prefix
	} {
		_, err := s.Resolve(ctx, tt.name)
		if !errors.Is(err, tt.kind) {
			t.Errorf("Resolve(%q) = %v, want %v", tt.name, err, tt.kind)
		}
	}

	// A tag moves to the image imported last.
	b2 := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "b"), "alpha:latest"), ImportOptions{})
	if b2.ID != b.ID {
		t.Fatalf("reimport gave %s, want %s", b2.ID, b.ID)
	}
	if im, err := s.Resolve(ctx, "alpha:latest"); err != nil || im.ID != b.ID {
		t.Errorf("alpha:latest = %s, %v; want %s (it moved)", im.ID, err, b.ID)
	}
	if im, _ := s.Inspect(ctx, a.ID); len(im.Refs) != 2 {
		t.Errorf("alpha kept %v", im.Refs)
	}

	// One of several names goes alone.
	r, err := s.Remove(ctx, "alpha:1", RemoveOptions{})
	if err != nil || r.Deleted || r.Untagged != "index.docker.io/library/alpha:1" {
		t.Fatalf("Remove(alpha:1) = %+v, %v; want untagged only", r, err)
	}
	// In use: refused, then forced with a warning.
	inUse := func(id string) []string {
		if id == a.ID {
			return []string{"sandbox web"}
		}
		return nil
	}
	_, err = s.Remove(ctx, a.ID, RemoveOptions{InUse: inUse})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "sandbox web") {
		t.Fatalf("Remove in use = %v, want ErrConflict naming the user", err)
	}
	oneLine(t, err)
	r, err = s.Remove(ctx, a.ID, RemoveOptions{InUse: inUse, Force: true})
	if err != nil || !r.Deleted || !strings.Contains(r.Warning, "sandbox web") {
		t.Fatalf("forced Remove = %+v, %v; want deleted with a warning", r, err)
	}
	if _, err := s.Inspect(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Inspect after Remove = %v, want ErrNotFound", err)
	}
	if _, err := s.Remove(ctx, b.ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if left := storeLeftovers(t, s); len(left) > 0 {
		t.Errorf("left after removing every image: %v", left)
	}
}

// TestAgentVariants keeps one root filesystem per agent, and a second
// import with a known agent builds nothing.
func TestAgentVariants(t *testing.T) {
	needBuild(t)
	s := openStore(t)
	path := writeDockerTarball(t, simpleImage(t, "v"), "v:1")
	a1, a2 := fakeAgent(t, "one"), fakeAgent(t, "two")
	mustImport(t, s, path, ImportOptions{BuildOptions: BuildOptions{Agent: a1}})
	mustImport(t, s, path, ImportOptions{})
	var builds int
	im := mustImport(t, s, path, ImportOptions{BuildOptions: BuildOptions{Agent: a2}, Progress: func(e Event) {
		if e.Kind == EventBuild {
			builds++
		}
	}})
	im = mustImport(t, s, path, ImportOptions{BuildOptions: BuildOptions{Agent: a1}, Progress: func(e Event) {
		if e.Kind == EventBuild {
			builds++
		}
	}})
	if builds != 1 || len(im.RootFS) != 3 {
		t.Fatalf("%d builds, root filesystems %+v; want 1 build and 3 files", builds, im.RootFS)
	}
	seen := map[string]bool{}
	for _, r := range im.RootFS {
		if _, err := os.Stat(r.Path); err != nil {
			t.Error(err)
		}
		seen[r.File] = true
	}
	if len(seen) != 3 || !seen["rootfs.ext4"] {
		t.Errorf("files %v", seen)
	}
}

func TestRecordVersion(t *testing.T) {
	needBuild(t)
	s := openStore(t)
	im := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "r"), "r:1"), ImportOptions{})
	h, _ := idHex(im.ID)
	path := filepath.Join(s.imageDir(h), recordFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || string(raw["version"]) != "1" {
		t.Fatalf("record %s: version %s, %v", path, raw["version"], err)
	}
	for _, key := range []string{`"working_dir"`, `"rootfs"`, `"imported"`, `"file": "rootfs.ext4"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("record lacks %s:\n%s", key, b)
		}
	}
	if strings.Contains(string(b), `"path"`) {
		t.Errorf("record stores absolute paths:\n%s", b)
	}
	newer := strings.Replace(string(b), `"version": 1`, `"version": 99`, 1)
	if err := os.WriteFile(path, []byte(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Inspect(context.Background(), im.ID); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Inspect of a newer record = %v, want ErrNotSupported", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Inspect(context.Background(), im.ID); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Inspect of a broken record = %v, want ErrCorrupt", err)
	}
}

// TestClean removes what a crashed import leaves, and nothing a running
// one holds.
func TestClean(t *testing.T) {
	s := openStore(t)
	h := strings.Repeat("ab", 32)
	stale := filepath.Join(s.dir, tmpDir, h+"-123")
	half := s.imageDir(h)
	for _, d := range []string{stale, half} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.Clean()
	if err != nil || len(removed) != 2 {
		t.Fatalf("Clean = %v, %v; want the build and the half image", removed, err)
	}
	if left := storeLeftovers(t, s); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
}

// TestCleanArchives: an unpacked OCI archive an import holds is kept; one
// a crashed import left (its lock free) is removed, with its lock.
func TestCleanArchives(t *testing.T) {
	s := openStore(t)
	held, l, err := s.archiveDir(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	crashed, l2, err := s.archiveDir(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l2.Unlock() // as a process that died: the lock file stays, unheld
	removed, err := s.Clean()
	if err != nil || !slices.Equal(removed, []string{crashed}) {
		t.Fatalf("Clean = %v, %v; want only %s", removed, err, crashed)
	}
	if _, err := os.Stat(held); err != nil {
		t.Errorf("the archive in use went: %v", err)
	}
	if _, err := os.Stat(s.lockPath(filepath.Base(crashed))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the crashed archive's lock file is left: %v", err)
	}
	os.RemoveAll(held)
	l.Drop()
	if left := storeLeftovers(t, s); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
}

// TestTagStaleRecord: an import that read an image's record before
// another import moved one of its names away does not take the name back
// when it saves.
func TestTagStaleRecord(t *testing.T) {
	needBuild(t)
	ctx := context.Background()
	s := openStore(t)
	b := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "b"), "shared:1"), ImportOptions{})
	stale := b // as a concurrent import of b read it
	a := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "a"), "shared:1"), ImportOptions{})
	if _, err := s.tag(ctx, stale, nil); err != nil {
		t.Fatal(err)
	}
	if im, err := s.Resolve(ctx, "shared:1"); err != nil || im.ID != a.ID {
		t.Errorf("shared:1 = %s, %v; want %s", im.ID, err, a.ID)
	}
	if im, _ := s.Inspect(ctx, b.ID); len(im.Refs) != 0 {
		t.Errorf("the stale save gave back %v", im.Refs)
	}
}
