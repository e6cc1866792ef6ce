package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// The proofs of guest networking on the simulated guest: the fake
// Firecracker opens the sandbox's tap by name, as Firecracker's virtio-net
// does, and copies its frames to and from the guest's eth0, which it
// configures from the kernel's ip= argument as a guest kernel would. The
// guest's programs are busybox's, run through the real agent. What this
// proves is the host side (namespaces, CNI, tc, nf_tables) carrying a
// guest's real frames; it proves nothing about virtio-net in a guest
// kernel.

// nsHandle opens a netlink handle in the namespace at path.
func nsHandle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// newServerNS makes a namespace of the test's own holding a TCP server
// that writes greeting to each connection, joined to the namespace at
// hostPath by a veth (host end hostAddr, server end srvAddr, both /30),
// with its default route back through the host. It returns the server's
// address:port; everything goes at cleanup.
func newServerNS(t *testing.T, hostPath, hostAddr, srvAddr, greeting string) string {
	t.Helper()
	name := "kdsbx-srv-" + hexID(t, 3)
	path, err := netdev.CreateNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netdev.DeleteNetNS(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	hh, hs := nsHandle(t, hostPath), nsHandle(t, path)
	fd, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	veth := "kdsv" + hexID(t, 3)
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth}, PeerName: "srv0", PeerNamespace: netlink.NsFd(int(fd))}); err != nil {
		t.Fatalf("veth to the server namespace: %v", err)
	}
	for _, s := range []struct {
		h          *netlink.Handle
		link, addr string
	}{{hh, veth, hostAddr + "/30"}, {hs, "srv0", srvAddr + "/30"}, {hs, "lo", ""}} {
		l, err := s.h.LinkByName(s.link)
		if err != nil {
			t.Fatal(err)
		}
		if s.addr != "" {
			a, _ := netlink.ParseAddr(s.addr)
			if err := s.h.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := hs.RouteAdd(&netlink.Route{Gw: net.ParseIP(hostAddr)}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	err = netdev.Do(path, func() error {
		var err error
		ln, err = net.Listen("tcp4", srvAddr+":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// dialIn connects from the namespace at path to addr and returns what the
// other side wrote until it closed.
func dialIn(path, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := netdev.Do(path, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return string(b), err
}

// guestFetch runs busybox's nc in the guest against addr and returns its
// exit code and output.
func guestFetch(t *testing.T, r *Runtime, id, addr string) (int, string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	code, out, errOut := run(t, r, id, ExecRequest{Args: []string{"sh", "-c",
		fmt.Sprintf("busybox nc -w 3 %s %s </dev/null", host, port)}})
	return code, out + errOut
}

// agentCNISpec is a sandbox spec booting the agent image img on e's
// network, with ports published.
func (e *cniEnv) agentSpec(t *testing.T, id, fc, img string, ports ...string) Spec {
	s := e.spec(t, id, fc, ports...)
	s.Kernel, s.KernelArgs, s.Rootfs, s.MemoryMiB = agentKernel(t), testutil.AgentBootArgs, &Disk{Path: img}, 64
	return s
}

// A guest process reaches a server in another namespace through a CNI
// bridge network, and a port published with -p answers from the host.
func TestNetGuestCNI(t *testing.T) {
	needCNI(t)
	testutil.NeedSimulatedGuest(t)
	ctx := context.Background()
	e := newCNIEnv(t)
	// The server's namespace hangs off the test's host namespace, which
	// routes between it and the bridge (the bridge plugin turns on
	// forwarding there).
	srv := newServerNS(t, e.hostPth, "10.215.0.1", "10.215.0.2", "hello from the server\n")
	r, fc := newRuntime(t, false)
	id := "kdsbx-" + hexID(t, 4)
	img := testutil.AgentRootfs(t, testutil.AgentRootOptions{})
	t.Cleanup(func() { checkSimLeftovers(t, id, img) })
	if _, err := r.Create(ctx, e.agentSpec(t, id, fc, img, "18090:8080"), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), id, true); err != nil {
			t.Errorf("remove: %v", err)
		}
		e.checkNothingLeft(t, id, "after rm")
	})
	in, err := r.Start(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if in.Network == nil || in.Network.Kind != "cni" || len(in.Network.Interfaces) != 1 {
		t.Fatalf("Info.Network = %+v, want one CNI interface", in.Network)
	}
	guest := in.Network.Interfaces[0]
	if guest.Network != e.network || in.Network.HostAddress+"/24" != guest.Address {
		t.Errorf("Info.Network = %+v", in.Network)
	}
	// The guest's eth0 is what ip= said: the CNI address, the CNI MAC.
	code, out, _ := run(t, r, id, ExecRequest{Args: []string{"sh", "-c", "busybox ip -4 addr show eth0; busybox ip link show eth0; busybox ip route"}})
	if code != 0 || !strings.Contains(out, guest.Address) || !strings.Contains(out, strings.ToLower(guest.MAC)) ||
		!strings.Contains(out, "default via "+guest.Gateway) {
		t.Fatalf("guest's eth0 (exit %d):\n%s\nwant address %s, MAC %s, default via %s", code, out, guest.Address, guest.MAC, guest.Gateway)
	}
	t.Run("guest reaches a server", func(t *testing.T) {
		if code, out := guestFetch(t, r, id, srv); code != 0 || out != "hello from the server\n" {
			t.Fatalf("guest nc %s: exit %d, %q", srv, code, out)
		}
	})
	t.Run("published port answers from the host", func(t *testing.T) {
		p, err := r.Exec(ctx, id, ExecRequest{Args: []string{"sh", "-c", "echo hello from the guest | busybox nc -l -p 8080"}})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		// The host reaches the sandbox at its own address (the bridge's
		// gateway here), port 18090.
		target := net.JoinHostPort(guest.Gateway, "18090")
		var got string
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err = dialIn(e.hostPth, target, 2*time.Second)
			if err == nil && got != "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil || got != "hello from the guest\n" {
			t.Fatalf("host to %s: %q, %v", target, got, err)
		}
	})
}
