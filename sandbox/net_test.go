package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// requireNet skips unless this process may create taps and namespaces.
func requireNet(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create taps and network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

// inode returns the inode of a namespace file.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestAutoTapIsCreatedAndReleased(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(map[bool]string{false: "fake", true: "real"}[real], func(t *testing.T) { testAutoTap(t, real) })
	}
}

func testAutoTap(t *testing.T, real bool) {
	requireNet(t)
	r, fc := newRuntime(t, real)
	ctx := context.Background()
	in, err := r.Create(ctx, Spec{ID: "nettest", Kernel: haltGuest(t, "net"), Firecracker: fc, Net: []Net{{Auto: true}}}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tap := in.Taps[0].Name
	if _, err := netlink.LinkByName(tap); err == nil {
		t.Fatalf("tap %s exists before start", tap)
	}
	if _, err := r.Start(ctx, "nettest"); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatalf("tap %s after start: %v", tap, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap %s is not up", tap)
	}
	if err := r.Stop(ctx, "nettest"); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(tap); err == nil {
		t.Errorf("tap %s still exists after the VMM exited", tap)
	}
	if err := r.Remove(ctx, "nettest", false); err != nil {
		t.Fatal(err)
	}
}

func TestNetNSRunsTheVMMInside(t *testing.T) {
	requireNet(t)
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	name := fmt.Sprintf("kdtest-%d", os.Getpid())
	// NewNamed moves this thread into the new namespace: keep the goroutine
	// on it until it is moved back.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name) // also switches this thread: switch back
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	ns.Close()
	if err := netns.Set(orig); err != nil {
		t.Fatal(err) // the thread stays locked, so Go discards it
	}
	runtime.UnlockOSThread()
	t.Cleanup(func() { netns.DeleteNamed(name) })
	nsPath := filepath.Join("/run/netns", name)

	in, err := r.Create(ctx, Spec{ID: "nstest", Kernel: haltGuest(t, "ns"), Firecracker: fc, NetNS: name, Net: []Net{{Auto: true}}}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, "nstest"); err != nil {
		t.Fatal(err)
	}
	in, _ = r.Inspect(ctx, "nstest")
	if got, want := inode(t, fmt.Sprintf("/proc/%d/ns/net", in.PID)), inode(t, nsPath); got != want {
		t.Errorf("the VMM runs in namespace inode %d, want %d (%s)", got, want, nsPath)
	}
	tap := in.Taps[0].Name
	if ok, err := netdev.TapExists(tap, nsPath); err != nil || !ok {
		t.Errorf("tap %s in %s: %v, %v", tap, name, ok, err)
	}
	if _, err := netlink.LinkByName(tap); err == nil {
		t.Errorf("tap %s is visible in the host namespace", tap)
	}
	if err := r.Stop(ctx, "nstest"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := netdev.TapExists(tap, nsPath); ok {
		t.Errorf("tap %s still in %s after stop", tap, name)
	}
	if err := r.Remove(ctx, "nstest", false); err != nil {
		t.Fatal(err)
	}
}
