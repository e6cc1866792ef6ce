package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/vmm"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in            string
		bw, ops       int64         // bucket sizes, 0 for none
		bwRef, opsRef time.Duration // refill times
	}{
		{in: "100Mbit", bw: 1_250_000, bwRef: 100 * time.Millisecond},
		{in: "100Mbit/s", bw: 1_250_000, bwRef: 100 * time.Millisecond},
		{in: "1Gbit", bw: 12_500_000, bwRef: 100 * time.Millisecond},
		{in: "12.5MB", bw: 1_250_000, bwRef: 100 * time.Millisecond},
		{in: "10MiB", bw: 1_048_576, bwRef: 100 * time.Millisecond},
		// 1 Mbit/s is 125000 B/s: a 100 ms bucket (12500 B) would not hold a
		// 64 KiB frame, so the period grows to 525 ms (65625 B).
		{in: "1Mbit", bw: 65_625, bwRef: 525 * time.Millisecond},
		{in: "10kpps", ops: 1000, opsRef: 100 * time.Millisecond},
		{in: "5pps", ops: 1, opsRef: 200 * time.Millisecond},
		{in: "100Mbit, 10kpps", bw: 1_250_000, bwRef: 100 * time.Millisecond, ops: 1000, opsRef: 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			rl, err := ParseRate(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, b *vmm.TokenBucket, size int64, refill time.Duration) {
				t.Helper()
				if size == 0 {
					if b != nil {
						t.Errorf("%s = %+v, want none", what, *b)
					}
					return
				}
				if b == nil || b.Size != size || b.RefillTime != refill {
					t.Errorf("%s = %+v, want size %d refill %v", what, b, size, refill)
				}
			}
			check("bandwidth", rl.Bandwidth, tt.bw, tt.bwRef)
			check("ops", rl.Ops, tt.ops, tt.opsRef)
		})
	}
}

func TestParseRateErrors(t *testing.T) {
	tests := map[string]string{
		"":               `rate "": empty (want a rate such as "100Mbit" or "10kpps")`,
		"100":            `rate "100": no unit (want bit, kbit, Mbit, Gbit, B, KB, MB, GB, KiB, MiB, GiB, pps, kpps or Mpps)`,
		"fastMbit":       `rate "fastMbit": not a number before the unit Mbit`,
		"0Mbit":          `rate "0Mbit": must be more than zero`,
		"-5Mbit":         `rate "-5Mbit": must be more than zero`,
		"1bit":           `rate "1bit": below one byte or packet per second`,
		"1Mbit,2Mbit":    `rate "1Mbit,2Mbit": gives the same kind of limit twice (want at most one bandwidth and one packet rate)`,
		"NaNMbit":        `rate "NaNMbit": not a number before the unit Mbit`,
		"99999999999GiB": `rate "99999999999GiB": too large`,
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			_, err := ParseRate(in)
			if err == nil || err.Error() != want {
				t.Fatalf("ParseRate(%q) = %v\nwant %s", in, err, want)
			}
			if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %v: want one line matching ErrInvalid", err)
			}
		})
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"100Mbit", "10kpps", "1Mbit,2kpps", "1e3B", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rl, err := ParseRate(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseRate(%q): %v does not match ErrInvalid", s, err)
			}
			return
		}
		for _, b := range []*vmm.TokenBucket{rl.Bandwidth, rl.Ops} {
			if b != nil && (b.Size < 1 || b.RefillTime < time.Millisecond || b.RefillTime%time.Millisecond != 0) {
				t.Fatalf("ParseRate(%q) gave bucket %+v", s, *b)
			}
		}
		if rl.Bandwidth == nil && rl.Ops == nil {
			t.Fatalf("ParseRate(%q) gave no limit and no error", s)
		}
	})
}

func TestKernelIPArg(t *testing.T) {
	tests := []struct {
		g      GuestConfig
		device string
		want   string
	}{
		{GuestConfig{Address: netip.MustParsePrefix("172.16.0.2/30"), Gateway: netip.MustParseAddr("172.16.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("172.16.0.1")}}, "eth0",
			"ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1"},
		{GuestConfig{Address: netip.MustParsePrefix("10.1.2.3/24")}, "",
			"ip=10.1.2.3:::255.255.255.0:::off"},
		{GuestConfig{Address: netip.MustParsePrefix("10.1.2.3/24"), Gateway: netip.MustParseAddr("10.1.2.1"),
			DNS: []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("9.9.9.9")}}, "eth1",
			"ip=10.1.2.3::10.1.2.1:255.255.255.0::eth1:off:1.1.1.1:8.8.8.8"},
		{GuestConfig{Address: netip.MustParsePrefix("fd00::2/64")}, "eth0", ""},
		{GuestConfig{}, "eth0", ""},
	}
	for _, tt := range tests {
		if got := tt.g.KernelIPArg(tt.device); got != tt.want {
			t.Errorf("KernelIPArg(%+v, %q) = %q, want %q", tt.g, tt.device, got, tt.want)
		}
	}
}

func TestValidateID(t *testing.T) {
	for _, good := range []string{"a", "sb-1", "A.b_c-9", strings.Repeat("x", 64)} {
		if err := ValidateID(good); err != nil {
			t.Errorf("ValidateID(%q) = %v", good, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "a/b", "a b", strings.Repeat("x", 65), "ü"} {
		if err := ValidateID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// The slot's fixed guest side is what the VMM driver and the kernel take.
func TestSlotConstants(t *testing.T) {
	if _, err := netdev.ParseMAC(SlotGuestMAC); err != nil {
		t.Error(err)
	}
	if err := netdev.ValidateTapName(SlotTap); err != nil {
		t.Error(err)
	}
	if !SlotGateway.Contains(SlotGuestAddr.Addr()) || SlotGateway.Bits() != SlotGuestAddr.Bits() || SlotGateway.Addr() == SlotGuestAddr.Addr() {
		t.Errorf("gateway %s and guest %s are not two hosts of one subnet", SlotGateway, SlotGuestAddr)
	}
	if DefaultSlotRange.Contains(SlotGuestAddr.Addr()) {
		t.Errorf("the slot range %s holds the guest address %s", DefaultSlotRange, SlotGuestAddr)
	}
	if n := (Slots{}).Capacity(); n != 16384 {
		t.Errorf("default capacity %d, want 16384", n)
	}
	for i, want := range map[int][2]string{0: {"198.19.0.1", "198.19.0.2"}, 3: {"198.19.0.13", "198.19.0.14"}, 16383: {"198.19.255.253", "198.19.255.254"}} {
		gw, addr := (Slots{}).slotAddrs(i)
		if gw.String() != want[0] || addr.String() != want[1] {
			t.Errorf("slot %d: %s and %s, want %s and %s", i, gw, addr, want[0], want[1])
		}
	}
}
