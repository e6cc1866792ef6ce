package agent_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestChmod(t *testing.T) {
	testutil.CheckLeaks(t)
	_, c := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		mode fs.FileMode
		want fs.FileMode // the mode afterwards
	}{
		{f, 0o751, 0o751},
		{f, 0o600 | fs.ModeSetgid, 0o600 | fs.ModeSetgid},
		{dir, 0o700 | fs.ModeSticky, fs.ModeDir | 0o700 | fs.ModeSticky},
	} {
		if err := c.Chmod(ctx, tc.path, tc.mode, agent.FileOptions{}); err != nil {
			t.Fatalf("chmod %s %v: %v", tc.path, tc.mode, err)
		}
		fi, err := os.Stat(tc.path)
		if err != nil || fi.Mode() != tc.want {
			t.Errorf("after chmod %v: mode %v (%v), want %v", tc.mode, fi.Mode(), err, tc.want)
		}
	}
	if err := c.Chmod(ctx, filepath.Join(dir, "missing"), 0o644, agent.FileOptions{}); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("chmod of a missing file: %v, want ErrNotFound", err)
	}
	if err := c.Chmod(ctx, filepath.Join(dir, "link"), 0o644, agent.FileOptions{}); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("chmod of a symbolic link: %v, want ErrInvalid", err)
	}
	if err := c.Chmod(ctx, f, 0o644, agent.FileOptions{User: "no-such-user-kindling"}); !errors.Is(err, agent.ErrAccessDenied) {
		t.Errorf("chmod as a missing user: %v, want ErrAccessDenied", err)
	}
}
