package network

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPool(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	w := newWorld(t)
	p, err := NewPool(w.slots(), 3)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			p.Close(ctx)
		}
	})
	if err := p.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	if n := p.Ready(); n != 3 {
		t.Fatalf("Ready = %d after Fill, want 3", n)
	}
	start := time.Now()
	rec, err := p.Claim(ctx)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claim from a filled pool took %v", took)
	if took > 50*time.Millisecond {
		t.Errorf("claim took %v; a ready slot should take microseconds", took)
	}
	g := startGuest(t, rec.NetNS, rec.Tap, rec.Guest)
	mustFetch(t, g.ns, w.server, "hello from the server")
	g.stop()
	if err := p.Release(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// The refill brings it back to 3.
	deadline := time.Now().Add(5 * time.Second)
	for p.Ready() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := p.Ready(); n != 3 {
		t.Errorf("Ready = %d after the refill, want 3", n)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	closed = true
	if _, err := p.Claim(ctx); !errors.Is(err, ErrConflict) {
		t.Errorf("Claim after Close = %v, want ErrConflict", err)
	}
	inv, err := Leaks(ctx, LeakOptions{Host: w.host, SlotPrefix: testSlotPrefix})
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Empty() {
		t.Errorf("after Close: %s", inv)
	}
}

func TestNewPoolBadInput(t *testing.T) {
	for _, n := range []int{0, -1, 1 << 20} {
		if _, err := NewPool(Slots{}, n); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewPool(size %d) = %v, want ErrInvalid", n, err)
		}
	}
}

// BenchmarkSlotCreate is a slot made on the start path, without a pool.
func BenchmarkSlotCreate(b *testing.B) {
	needRoot(b)
	ctx := context.Background()
	s := Slots{Host: newHost(b), NamePrefix: testSlotPrefix}
	for b.Loop() {
		rec, err := s.Create(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Destroy(ctx, rec); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkSlotClaim is a slot claimed from a filled pool.
func BenchmarkSlotClaim(b *testing.B) {
	needRoot(b)
	ctx := context.Background()
	s := Slots{Host: newHost(b), NamePrefix: testSlotPrefix}
	p, err := NewPool(s, 4)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close(ctx) })
	for b.Loop() {
		b.StopTimer()
		if err := p.Fill(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rec, err := p.Claim(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := p.Release(ctx, rec); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkSetupFromPool is the network part of a clone's start: a slot
// from a filled pool, tagged with the sandbox ID; with -ports-egress also
// a published port and an egress policy.
func BenchmarkSetupFromPool(b *testing.B) {
	for _, full := range []bool{false, true} {
		name := "slot"
		if full {
			name = "slot+port+egress"
		}
		b.Run(name, func(b *testing.B) {
			needRoot(b)
			ctx := context.Background()
			host := newHost(b)
			s := Slots{NamePrefix: testSlotPrefix, Host: host}
			p, err := NewPool(s, 4)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { p.Close(ctx) })
			m := &Manager{Host: host, Slots: s, Pool: p}
			spec := Spec{SandboxID: testPrefix + "-bench"}
			if full {
				spec.Ports, _ = ParsePorts([]string{"8080:80"})
				eg, _ := ParseEgress("deny", []string{"10.0.0.0/8", "example.com"})
				spec.Egress = &eg
			}
			for b.Loop() {
				b.StopTimer()
				if err := p.Fill(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				rec, err := m.Setup(ctx, spec)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := m.Teardown(ctx, rec); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
