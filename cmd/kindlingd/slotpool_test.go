package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

// slotHost is a namespace of the test's own that plays the host for a
// kindlingd started inside it, so that its slots' veths, addresses and
// sysctls never touch the machine's own namespace.
func slotHost(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: slots need root (network namespaces, veths, taps)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: needs /dev/net/tun: %v", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "kdd-host-" + hex.EncodeToString(b)
	path, err := netdev.CreateNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netdev.DeleteNetNS(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return path
}

// hostSlots returns the slot namespaces whose host veth (kdh<N>) is in
// the namespace host: the slots of a kindlingd running there, whatever
// other processes on the machine hold.
func hostSlots(t *testing.T, host string) []string {
	t.Helper()
	inv, err := network.Leaks(context.Background(), network.LeakOptions{Host: network.Host{NetNS: host}})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Tables) > 0 {
		t.Errorf("the host namespace holds tables %v", inv.Tables)
	}
	var out []string
	for _, l := range inv.Links {
		if n, ok := strings.CutPrefix(l, "kdh"); ok {
			out = append(out, filepath.Join(netdev.NetNSDir, "kdslot-"+n))
		}
	}
	slices.Sort(out)
	return out
}

// waitSlots waits until the namespace host holds n slots and returns them.
func waitSlots(t *testing.T, host string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := hostSlots(t, host)
		if len(got) == n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host namespace holds slots %v, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kindlingd keeps a pool of slots: it makes none before a --net slot
// sandbox asks, then keeps --slot-pool of them ready, a later --net slot
// create claims one of those, and a shutdown removes the ready ones.
func TestSlotPool(t *testing.T) {
	host := slotHost(t)
	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	cmd := exec.Command(binary(t), "--root", root, "--slot-pool", "2")
	d := startCmdWith(t, root, filepath.Join(root, socketName), cmd,
		func() error { return netdev.Do(host, cmd.Start) }) // its children inherit the namespace
	c := d.client(t)
	ctx := context.Background()
	if got := hostSlots(t, host); len(got) != 0 {
		t.Fatalf("kindlingd made slots %v before any sandbox asked for one", got)
	}
	start := func(id string) sandbox.Info {
		t.Helper()
		if _, err := c.Create(ctx, sandbox.Spec{ID: id, Demo: sandbox.DemoIdle, NetSlot: true}, sandbox.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		in, err := c.Start(ctx, id)
		if err != nil {
			t.Fatalf("start %s: %v\n%s", id, err, d.output)
		}
		if in.Network == nil || in.Network.Kind != "slot" {
			t.Fatalf("sandbox %s's network: %+v, want a slot", id, in.Network)
		}
		return in
	}
	first := start("first")
	ready := slices.DeleteFunc(waitSlots(t, host, 3), func(s string) bool { return s == first.Network.NetNS })
	second := start("second")
	if !slices.Contains(ready, second.Network.NetNS) {
		t.Errorf("the second sandbox got slot %s, not one of the pool's ready %v", second.Network.NetNS, ready)
	}
	// Slots are the host's: once freed, a name may be taken at once by
	// another runtime (another test package running beside this one).
	// So each slot's namespace is held open, which keeps its identity
	// from being reused, and the name must no longer lead to it.
	held := map[string]os.FileInfo{}
	for _, in := range []sandbox.Info{first, second} {
		f, err := os.Open(in.Network.NetNS)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		held[in.Network.NetNS] = fi
	}
	for _, id := range []string{"first", "second"} {
		if err := c.Stop(ctx, id, sandbox.StopGrace(0)); err != nil {
			t.Fatal(err)
		}
	}
	for ns, was := range held {
		if fi, err := os.Stat(ns); err == nil && os.SameFile(fi, was) {
			t.Errorf("slot %s is still there after its sandbox stopped", ns)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("slot %s after its sandbox stopped: %v", ns, err)
		}
	}
	ready = waitSlots(t, host, 2)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t, 30*time.Second); err != nil {
		t.Fatalf("kindlingd exit: %v\n%s", err, d.output)
	}
	if got := hostSlots(t, host); len(got) != 0 {
		t.Errorf("after shutdown the host namespace holds slots %v", got)
	}
	for _, ns := range ready {
		if _, err := os.Stat(ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the pool's slot %s after shutdown: %v", ns, err)
		}
	}
}

// --slot-pool out of range is a usage error.
func TestSlotPoolFlag(t *testing.T) {
	for _, v := range []string{"-1", "1001"} {
		_, err := parseFlags([]string{"--slot-pool", v}, &strings.Builder{})
		var u *usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), "--slot-pool "+v) {
			t.Errorf("--slot-pool %s: %v, want a usage error naming it", v, err)
		}
	}
	o, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if want := defaultSlotPool(); o.slotPool != want {
		t.Errorf("default --slot-pool %d, want %d", o.slotPool, want)
	}
}
