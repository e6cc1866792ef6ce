package netdev

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Two namespaces, each with a tap of its own, wired together: TCP works
// between them as between two machines on one cable.
func TestWire(t *testing.T) {
	needRoot(t)
	nsA, _ := newTestNetNS(t)
	nsB, _ := newTestNetNS(t)
	// A persistent tap in A (as the runtime makes them), a guest's own
	// non-persistent one in B.
	tapA := testTapName(t)
	if _, err := CreateTap(context.Background(), TapSpec{Name: tapA, NetNS: nsA}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, tapA, nsA)
	fa, err := AttachTap(tapA, nsA)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := AttachTap("eth0", nsB)
	if err != nil {
		fa.Close()
		t.Fatal(err)
	}
	w := NewWire(fa, fb)
	t.Cleanup(func() { w.Close() })
	if _, err := AttachTap(tapA, nsA); !errors.Is(err, ErrBusy) {
		t.Errorf("a second attach = %v, want ErrBusy", err)
	}
	for _, s := range []struct{ ns, dev, addr string }{{nsA, tapA, "10.217.0.1/30"}, {nsB, "eth0", "10.217.0.2/30"}} {
		h, err := handleIn(context.Background(), mustResolve(t, s.ns))
		if err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(s.dev)
		if err == nil {
			a, _ := netlink.ParseAddr(s.addr)
			err = errors.Join(h.AddrAdd(l, a), h.LinkSetUp(l))
		}
		h.Close()
		if err != nil {
			t.Fatalf("%s in %s: %v", s.dev, s.ns, err)
		}
	}
	var ln net.Listener
	if err := Do(nsB, func() error {
		var err error
		ln, err = net.Listen("tcp", "10.217.0.2:7")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, "over the wire")
			c.Close()
		}
	}()
	var got []byte
	err = Do(nsA, func() error {
		c, err := net.DialTimeout("tcp", "10.217.0.2:7", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil || string(got) != "over the wire" {
		t.Fatalf("TCP across the wire: %q, %v", got, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The guest's own tap went with its file; the persistent one stays.
	if ok, _ := TapExists("eth0", nsB); ok {
		t.Error("the non-persistent eth0 outlived its file")
	}
	if ok, err := TapExists(tapA, nsA); !ok || err != nil {
		t.Errorf("the persistent tap: %v, %v", ok, err)
	}
}

func mustResolve(t *testing.T, ns string) string {
	t.Helper()
	p, err := ResolveNetNS(ns)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
