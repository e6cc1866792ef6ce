package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
)

func TestSimCgroupTagIsTheFakes(t *testing.T) {
	if envSimCgroupTag != fakefc.EnvCgroupTag {
		t.Fatalf("CheckLeaks tags fakes through %s, the fake reads %s", envSimCgroupTag, fakefc.EnvCgroupTag)
	}
}

// CheckLeaks reports the simulated guests' cgroups that the test's own
// fakes left, and no other: not those of other test processes, nor those
// there before the test, nor those removed by the end of its cleanups.
func TestCheckLeaksSimCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("skipping: making cgroups needs root (running as uid %d)", os.Geteuid())
	}
	mnts := cgroup2Mounts()
	if len(mnts) == 0 {
		t.Skip("skipping: no cgroup v2 hierarchy mounted")
	}
	shortSettle(t)
	old := simCgroupSettle
	simCgroupSettle = time.Second
	t.Cleanup(func() { simCgroupSettle = old })

	parent := filepath.Join(mnts[0], "kindling-sim")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	// The names the fakes make: <id>-<pid>-<start>[-t<tag>]; the ID says
	// what each one stands for.
	pre := fmt.Sprintf("leaktest%d", os.Getpid())
	mk := func(what, tag string) string {
		dir := filepath.Join(parent, fmt.Sprintf("%s%s-1-2", pre, what))
		if tag != "" {
			dir += "-t" + tag
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(dir) })
		return dir
	}
	tag := simCgroupTag()
	if tag == "" {
		t.Fatal("no tag for this process")
	}
	earlier := mk("earlier", tag)
	var leaked, removed, removedLater, other, untagged string
	r := newRecorder(t)
	r.Run(func(tb testing.TB) {
		CheckLeaks(tb)
		if got := os.Getenv(envSimCgroupTag); got != tag {
			t.Errorf("CheckLeaks set %s=%q, want %q", envSimCgroupTag, got, tag)
		}
		leaked = mk("leaked", tag)
		removed = mk("removed", tag)
		tb.Cleanup(func() { _ = os.Remove(removed) })
		// As a janitor does, a moment after the fake has gone.
		removedLater = mk("later", tag)
		go func() {
			time.Sleep(200 * time.Millisecond)
			_ = os.Remove(removedLater)
		}()
		other = mk("other", "1_2")
		untagged = mk("untagged", "")
	})
	report := r.report()
	want := fmt.Sprintf("leaked cgroup of a simulated guest of the test's fake Firecracker: %s (populated 0)", leaked)
	if !strings.Contains(report, want) {
		t.Errorf("report does not hold %q:\n%s", want, report)
	}
	for _, dir := range []string{earlier, removed, removedLater, other, untagged} {
		if strings.Contains(report, dir) {
			t.Errorf("report blames %s, not a leak of this test:\n%s", dir, report)
		}
	}
	if strings.Count(report, "\n  leaked ") != 1 {
		t.Errorf("report blames more than the cgroup:\n%s", report)
	}
	if _, err := os.Stat(leaked); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the leaked cgroup %s is still there after the check (%v)", leaked, err)
	}
	for _, dir := range []string{earlier, other, untagged} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the check removed %s, not its test's (%v)", dir, err)
		}
	}
}
