package image

import (
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"etc/passwd", "./a/b", "/abs/path", "../../etc/passwd", "a/../../b", ".", "/", "a//b/./c/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := cleanName(name)
		if err != nil {
			return
		}
		if got != "." && !filepath.IsLocal(got) {
			t.Fatalf("cleanName(%q) = %q, not a local path", name, got)
		}
	})
}

// TestUsedInodes checks the inode bitmap reader against the superblock's
// count of free inodes.
func TestUsedInodes(t *testing.T) {
	needBuild(t)
	im := mustImport(t, openStore(t), writeDockerTarball(t, kindsImage(t), "kinds:1"), ImportOptions{})
	used, err := usedInodes(im.RootFS[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	stats := debugfs(t, im.RootFS[0].Path, "stats")
	num := func(re string) int {
		m := regexp.MustCompile(re).FindStringSubmatch(stats)
		if m == nil {
			t.Fatalf("no %s in stats", re)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	total, free, first := num(`Inode count:\s+(\d+)`), num(`Free inodes:\s+(\d+)`), num(`First inode:\s+(\d+)`)
	// The bitmap marks the reserved inodes in use; of them only the root
	// is listed.
	if want := total - free - (first - 2); len(used) != want {
		t.Errorf("usedInodes found %d, want %d (inodes %d, free %d)", len(used), want, total, free)
	}
	if used[0] != 2 {
		t.Errorf("first inode %d, want the root (2)", used[0])
	}
}
