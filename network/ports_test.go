package network

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts([]string{"8080:80", "53:5353/udp", "8443:443/tcp", "53:53/tcp"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PortMapping{{8080, 80, "tcp"}, {53, 5353, "udp"}, {8443, 443, "tcp"}, {53, 53, "tcp"}}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ParsePorts[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	bad := map[string]string{
		"8080":         `port "8080": want HOSTPORT:GUESTPORT[/tcp|/udp], as 8080:80`,
		"8080:80/sctp": `port "8080:80/sctp": protocol must be tcp or udp`,
		"0:80":         `port "0:80": host port must be a number from 1 to 65535`,
		"8080:70000":   `port "8080:70000": guest port must be a number from 1 to 65535`,
		"x:80":         `port "x:80": host port must be a number from 1 to 65535`,
		"":             `port "": want HOSTPORT:GUESTPORT[/tcp|/udp], as 8080:80`,
	}
	for in, want := range bad {
		_, err := ParsePorts([]string{in})
		if err == nil || err.Error() != want || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePorts(%q) = %v\nwant %s", in, err, want)
		}
	}
	_, err = ParsePorts([]string{"8080:80", "8080:81"})
	if want := `port "8080:81": host port 8080/tcp is also given by "8080:80"`; err == nil || err.Error() != want {
		t.Errorf("duplicate host port: %v, want %s", err, want)
	}
}

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080:80", "1:1/udp", "65535:65535/tcp", ":", "/", "0:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParsePort(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("ParsePort(%q): %v", s, err)
			}
			return
		}
		if m.HostPort == 0 || m.GuestPort == 0 || (m.Protocol != "tcp" && m.Protocol != "udp") {
			t.Fatalf("ParsePort(%q) = %+v", s, m)
		}
		again, err := ParsePort(m.String())
		if err != nil || again != m {
			t.Fatalf("ParsePort(%q) = %v, but its String %q parses to %v, %v", s, m, m.String(), again, err)
		}
	})
}

func TestPublishedPortAnswers(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	a := createSlot(t, w.slots())
	g := startGuest(t, a.NetNS, a.Tap, a.Guest)
	serve(t, g.ns, "0.0.0.0:80", "hello from the guest")

	ports, err := ParsePorts([]string{"8080:80"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := w.host.Publish(ctx, "kdnet-a", a.Addr, ports)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.host.Unpublish(ctx, pub) })
	// From the host itself, at one of its addresses and at localhost.
	mustFetch(t, w.host.NetNS, "10.214.0.1:8080", "hello from the guest")
	mustFetch(t, w.host.NetNS, "127.0.0.1:8080", "hello from the guest")
	// From another machine (the server's namespace) through the host.
	mustFetch(t, w.srvNS, "10.214.0.1:8080", "hello from the guest")

	// Another sandbox cannot take the same host port.
	_, err = w.host.Publish(ctx, "kdnet-b", a.Addr, ports)
	if want := `host port 8080/tcp is already published by sandbox "kdnet-a": conflict`; err == nil || err.Error() != want {
		t.Errorf("second Publish = %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrConflict) {
		t.Errorf("errors.Is(%v, ErrConflict) = false", err)
	}
	// Nor a port a process on the host has bound.
	var ln net.Listener
	if err := inNS(w.host.NetNS, func() error {
		var err error
		ln, err = net.Listen("tcp", ":9090")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy, _ := ParsePorts([]string{"9090:80"})
	_, err = w.host.Publish(ctx, "kdnet-b", a.Addr, busy)
	if want := "host port 9090/tcp is in use on the host: conflict"; err == nil || err.Error() != want {
		t.Errorf("Publish of a bound port = %v\nwant %s", err, want)
	}
	inv, err := Leaks(ctx, LeakOptions{Host: w.host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Tables) != 1 {
		t.Errorf("tables after refused publishes: %v, want only kdnet-a's", inv.Tables)
	}

	if err := w.host.Unpublish(ctx, pub); err != nil {
		t.Fatal(err)
	}
	if err := w.host.Unpublish(ctx, pub); err != nil {
		t.Errorf("second Unpublish: %v", err)
	}
	if _, err := fetch(w.host.NetNS, "10.214.0.1:8080", 0); err == nil {
		t.Error("the port still answers after Unpublish")
	}
	// Now sandbox b can have it.
	pb, err := w.host.Publish(ctx, "kdnet-b", a.Addr, ports)
	if err != nil {
		t.Fatalf("Publish after the other's Unpublish: %v", err)
	}
	if err := w.host.Unpublish(ctx, pb); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPublishAndEgress is a sandbox's published port plus its egress
// policy, as a runtime in the host namespace makes them. The loop runs on
// a thread inside the test's host namespace with Host{NetNS: ""}, so no
// call pays for entering a namespace, as none does in production.
func BenchmarkPublishAndEgress(b *testing.B) {
	needRoot(b)
	ctx := context.Background()
	test := newHost(b)
	slot := createSlot(b, Slots{Host: test, NamePrefix: testSlotPrefix})
	ports, _ := ParsePorts([]string{"8080:80"})
	eg, _ := ParseEgress("deny", []string{"10.0.0.0/8", "example.com"})
	var failed error
	err := inNS(test.NetNS, func() error {
		h := Host{LockDir: test.LockDir} // the calling thread's namespace
		for b.Loop() {
			pub, err := h.Publish(ctx, "kdnet-bench", slot.Addr, ports)
			if err != nil {
				failed = err
				return nil
			}
			rec, err := h.ApplyEgress(ctx, "kdnet-bench", EgressSource{Iface: slot.HostVeth}, eg)
			if err != nil {
				failed = err
				return nil
			}
			b.StopTimer()
			if err := errors.Join(h.RemoveEgress(ctx, rec), h.Unpublish(ctx, pub)); err != nil {
				failed = err
				return nil
			}
			b.StartTimer()
		}
		return nil
	})
	if err != nil || failed != nil {
		b.Fatal(err, failed)
	}
}

// A UDP port is published and checked for use like a TCP one.
func TestPublishedUDPPort(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	a := createSlot(t, w.slots())
	g := startGuest(t, a.NetNS, a.Tap, a.Guest)
	// A UDP echo in the guest on port 53.
	var pc net.PacketConn
	if err := inNS(g.ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp", "0.0.0.0:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	ports, _ := ParsePorts([]string{"5353:53/udp"})
	pub, err := w.host.Publish(ctx, "kdnet-udp", a.Addr, ports)
	if err != nil {
		t.Fatal(err)
	}
	defer w.host.Unpublish(ctx, pub)
	var got string
	err = inNS(w.srvNS, func() error {
		c, err := net.Dial("udp", "10.214.0.1:5353")
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		got = string(buf[:n])
		return err
	})
	if err != nil || got != "echo ping" {
		t.Fatalf("UDP through the published port: %q, %v", got, err)
	}
	// A UDP port a host process holds is refused.
	var held net.PacketConn
	if err := inNS(w.host.NetNS, func() error {
		var err error
		held, err = net.ListenPacket("udp", ":5454")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy, _ := ParsePorts([]string{"5454:53/udp"})
	_, err = w.host.Publish(ctx, "kdnet-udp2", a.Addr, busy)
	if want := "host port 5454/udp is in use on the host: conflict"; err == nil || err.Error() != want {
		t.Errorf("Publish of a held UDP port = %v, want %s", err, want)
	}
}
