package fakefc_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// TestSimGuestDriveSwap: a PATCH of a drive's path_on_host after boot
// shows the new file at the same /dev/vdX of the running guest, as
// Firecracker's backing-file swap does, read-only when the drive is, and
// also while the guest is paused; nothing of it is left once the guest
// ends.
func TestSimGuestDriveSwap(t *testing.T) {
	needRoot(t)
	testutil.CheckLeaks(t)
	dir := t.TempDir()
	v := configureSim(t, simOpts{})
	// The placeholders a hotplug pool starts with, and the drives swapped in.
	slotRW := writeFile(t, dir, "slot-rw", "")
	slotRO := writeFile(t, dir, "slot-ro", "")
	first := writeFile(t, dir, "first.img", "first drive")
	second := writeFile(t, dir, "second.img", "second drive")
	ro := writeFile(t, dir, "ro.img", "read-only drive")
	v.must(204, "PUT", "/drives/pool0", fmt.Sprintf(`{"drive_id":"pool0","path_on_host":%q,"is_root_device":false,"is_read_only":false}`, slotRW))
	v.must(204, "PUT", "/drives/pool1", fmt.Sprintf(`{"drive_id":"pool1","path_on_host":%q,"is_root_device":false,"is_read_only":true}`, slotRO))
	v.must(204, "PUT", "/actions", `{"action_type":"InstanceStart"}`)
	v.waitOutput("siminit: up")
	fake, pid := v.fakeID(), v.initPID(t)

	patch := func(id, path string) {
		t.Helper()
		v.must(204, "PATCH", "/drives/"+id, fmt.Sprintf(`{"drive_id":%q,"path_on_host":%q}`, id, path))
	}
	steps := []struct {
		name, id, path string // the PATCH; none when id is ""
		pause          bool   // PATCH while the guest is paused
		asks           []struct{ cmd, want string }
	}{
		{name: "placeholders at boot", asks: []struct{ cmd, want string }{
			{"cat /dev/vdb", ""}, {"cat /dev/vdc", ""}}},
		{name: "attach", id: "pool0", path: first, asks: []struct{ cmd, want string }{
			{"cat /dev/vdb", "first drive"},
			{"write /dev/vdb first written", "ok\n"},
			{"cat /dev/vdb", "first written"}}},
		{name: "attach read-only", id: "pool1", path: ro, asks: []struct{ cmd, want string }{
			{"cat /dev/vdc", "read-only drive"},
			{"write /dev/vdc no", "error open /dev/vdc: read-only file system\n"}}},
		{name: "swap while paused", id: "pool0", path: second, pause: true, asks: []struct{ cmd, want string }{
			{"cat /dev/vdb", "second drive"},
			{"cat /dev/vdc", "read-only drive"}}},
		{name: "detach", id: "pool0", path: slotRW, asks: []struct{ cmd, want string }{
			{"cat /dev/vdb", ""}}},
		{name: "reuse", id: "pool0", path: first, asks: []struct{ cmd, want string }{
			{"cat /dev/vdb", "first written"}}},
	}
	for _, s := range steps {
		if s.pause {
			v.must(204, "PATCH", "/vm", `{"state":"Paused"}`)
		}
		if s.id != "" {
			patch(s.id, s.path)
		}
		if s.pause {
			v.must(204, "PATCH", "/vm", `{"state":"Resumed"}`)
		}
		for _, a := range s.asks {
			if got := v.ask(t, a.cmd); got != a.want {
				t.Errorf("%s: %s: %q, want %q", s.name, a.cmd, got, a.want)
			}
		}
	}
	if b, _ := os.ReadFile(first); string(b) != "first written" {
		t.Errorf("the first drive's file after the guest wrote it: %q", b)
	}
	for _, f := range []string{second, slotRW, slotRO, ro} {
		b, _ := os.ReadFile(f)
		if want := map[string]string{second: "second drive", ro: "read-only drive"}[f]; string(b) != want {
			t.Errorf("%s: %q, want %q (the guest wrote only to the drive attached then)", f, b, want)
		}
	}
	// A missing file is refused as Firecracker refuses it, and the guest
	// keeps what it had.
	code, body := v.do("PATCH", "/drives/pool0", fmt.Sprintf(`{"drive_id":"pool0","path_on_host":%q}`, dir+"/missing.img"))
	if code != 400 || !strings.Contains(body, "No such file or directory") {
		t.Errorf("PATCH to a missing file: %d %s, want 400 naming the error", code, body)
	}
	if got := v.ask(t, "cat /dev/vdb"); got != "first written" {
		t.Errorf("after a refused PATCH: %q, want the drive attached before", got)
	}
	if a := v.ask(t, "poweroff"); a != "bye\n" {
		t.Errorf("poweroff: %q", a)
	}
	if code, sig := v.waitExit(10 * time.Second); code != 0 {
		t.Errorf("fake ended with code %d signal %v, want 0\nstdout: %s", code, sig, v.stdout)
	}
	checkGone(t, fake, pid, v.img)
}
