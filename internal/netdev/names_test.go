package netdev

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestValidateTapName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // "" for valid
	}{
		{"a", ""},
		{"tap0", ""},
		{"kd0123456789ab", ""},
		{"fifteen-bytes-x", ""},
		{"kd_1.x-y", ""},
		{"...", ""},
		{"ünï", ""},
		{"", `tap name "": empty`},
		{"averyveryverylongname", `tap name "averyveryverylongname": longer than 15 bytes`},
		{"sixteen-bytes-xx", `tap name "sixteen-bytes-xx": longer than 15 bytes`},
		{".", `tap name ".": "." and ".." are reserved`},
		{"..", `tap name "..": "." and ".." are reserved`},
		{"a/b", `tap name "a/b": contains '/'`},
		{"a:b", `tap name "a:b": contains ':'`},
		{"tap%d", `tap name "tap%d": contains '%' (the kernel reads it as a name template)`},
		{"a b", `tap name "a b": contains whitespace`},
		{"a\tb", `tap name "a\tb": contains whitespace`},
		{"ab\n", `tap name "ab\n": contains whitespace`},
		{"a\xa0b", `tap name "a\xa0b": contains whitespace`},
		{"a\x01", `tap name "a\x01": contains control byte 0x01`},
		{"a\x7f", `tap name "a\x7f": contains control byte 0x7f`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.name), func(t *testing.T) {
			err := ValidateTapName(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateTapName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateTapName(%q) = nil, want %s", tt.name, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("error = %s\nwant    %s", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Value != tt.name {
				t.Errorf("errors.As(%v, *InvalidError) = %v, value %q", err, ie, tt.name)
			}
		})
	}
}

func TestTapName(t *testing.T) {
	tests := []struct {
		id   string
		want string
	}{
		// Pinned: a tap name must not change between kindling releases, or
		// a restarted runtime would not find its sandboxes' taps.
		{"sb-1", "kd95208ae5efd9"},
		{"01HZX3K4Q7R8S9T0V1W2X3Y4Z5", "kdc27fc5f80b2f"},
		{"", "kdc3113ff94ac7"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.id), func(t *testing.T) {
			got := TapName(tt.id)
			if got != tt.want {
				t.Errorf("TapName(%q) = %q, want %q", tt.id, got, tt.want)
			}
			if err := ValidateTapName(got); err != nil {
				t.Errorf("TapName(%q) is not valid: %v", tt.id, err)
			}
			if again := TapName(tt.id); again != got {
				t.Errorf("TapName(%q) not stable: %q then %q", tt.id, got, again)
			}
		})
	}
}

func TestTapNameDistinct(t *testing.T) {
	seen := make(map[string]string)
	for i := range 20000 {
		id := fmt.Sprintf("sandbox-%d", i)
		name := TapName(id)
		if len(name) != 14 || !strings.HasPrefix(name, "kd") {
			t.Fatalf("TapName(%q) = %q, want kd + 12 hex digits", id, name)
		}
		if other, ok := seen[name]; ok {
			t.Fatalf("TapName(%q) = TapName(%q) = %q", id, other, name)
		}
		seen[name] = id
	}
}

func TestMAC(t *testing.T) {
	tests := []struct {
		id   string
		want string
	}{
		// Pinned: a restored snapshot expects the same guest MAC.
		{"sb-1", "86:11:14:e7:f1:a4"},
		{"01HZX3K4Q7R8S9T0V1W2X3Y4Z5", "72:27:f5:22:ae:fb"},
		{"", "3e:e7:42:e5:37:29"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.id), func(t *testing.T) {
			mac := MAC(tt.id)
			if mac.String() != tt.want {
				t.Errorf("MAC(%q) = %s, want %s", tt.id, mac, tt.want)
			}
			checkGuestMAC(t, mac)
			if again := MAC(tt.id); again.String() != mac.String() {
				t.Errorf("MAC(%q) not stable: %s then %s", tt.id, mac, again)
			}
			parsed, err := ParseMAC(mac.String())
			if err != nil || parsed.String() != mac.String() {
				t.Errorf("ParseMAC(%q) = %s, %v; want it back", mac, parsed, err)
			}
		})
	}
}

func TestMACDistinct(t *testing.T) {
	seen := make(map[string]string)
	for i := range 20000 {
		id := fmt.Sprintf("sandbox-%d", i)
		mac := MAC(id)
		checkGuestMAC(t, mac)
		if other, ok := seen[mac.String()]; ok {
			t.Fatalf("MAC(%q) = MAC(%q) = %s", id, other, mac)
		}
		seen[mac.String()] = id
	}
}

// checkGuestMAC checks that mac is 6 bytes, locally administered, unicast.
func checkGuestMAC(t *testing.T, mac net.HardwareAddr) {
	t.Helper()
	if len(mac) != 6 {
		t.Fatalf("MAC %s is %d bytes, want 6", mac, len(mac))
	}
	if mac[0]&0x02 == 0 {
		t.Errorf("MAC %s is not locally administered", mac)
	}
	if mac[0]&0x01 != 0 {
		t.Errorf("MAC %s is not unicast", mac)
	}
}

func TestParseMAC(t *testing.T) {
	tests := []struct {
		in      string
		want    string // canonical form when valid
		wantErr string
	}{
		{in: "02:00:00:00:00:01", want: "02:00:00:00:00:01"},
		{in: "AA:FC:00:00:00:01", want: "aa:fc:00:00:00:01"},
		{in: "00:1b:21:3a:4b:5c", want: "00:1b:21:3a:4b:5c"},
		{in: "02-00-00-00-00-01", want: "02:00:00:00:00:01"},
		{in: "0200.0000.0001", want: "02:00:00:00:00:01"},
		{in: "", wantErr: `MAC "": not a MAC address (want six hex pairs, like 02:00:00:00:00:01)`},
		{in: "02:00:00:00:00", wantErr: `MAC "02:00:00:00:00": not a MAC address (want six hex pairs, like 02:00:00:00:00:01)`},
		{in: "02:00:00:00:00:0g", wantErr: `MAC "02:00:00:00:00:0g": not a MAC address (want six hex pairs, like 02:00:00:00:00:01)`},
		{in: " 02:00:00:00:00:01", wantErr: `MAC " 02:00:00:00:00:01": not a MAC address (want six hex pairs, like 02:00:00:00:00:01)`},
		{in: "02:00:00:00:00:00:00:01", wantErr: `MAC "02:00:00:00:00:00:00:01": 8 bytes long, want 6`},
		{in: "00:00:00:00:00:00", wantErr: `MAC "00:00:00:00:00:00": all zeros`},
		{in: "ff:ff:ff:ff:ff:ff", wantErr: `MAC "ff:ff:ff:ff:ff:ff": multicast or broadcast (lowest bit of the first octet is set), want unicast`},
		{in: "01:00:5e:00:00:01", wantErr: `MAC "01:00:5e:00:00:01": multicast or broadcast (lowest bit of the first octet is set), want unicast`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			mac, err := ParseMAC(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseMAC(%q) = %s, want error %s", tt.in, mac, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Errorf("error = %s\nwant    %s", err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMAC(%q): %v", tt.in, err)
			}
			if mac.String() != tt.want {
				t.Errorf("ParseMAC(%q) = %s, want %s", tt.in, mac, tt.want)
			}
		})
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00",
		"0200.0000.0001", "02-00-00-00-00-01", "02:00:00:00:00:00:00:01", "", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := ParseMAC(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseMAC(%q) error %v does not match ErrInvalid", s, err)
			}
			if mac != nil {
				t.Fatalf("ParseMAC(%q) returned %s with error %v", s, mac, err)
			}
			return
		}
		if len(mac) != 6 || mac[0]&0x01 != 0 || mac.String() == "00:00:00:00:00:00" {
			t.Fatalf("ParseMAC(%q) accepted %s", s, mac)
		}
		again, err := ParseMAC(mac.String())
		if err != nil || again.String() != mac.String() {
			t.Fatalf("ParseMAC(%q) = %s, but its String parses to %s, %v", s, mac, again, err)
		}
	})
}

func FuzzValidateTapName(f *testing.F) {
	for _, s := range []string{"tap0", "", ".", "..", "a/b", "a b", "tap%d", "averyveryverylongname", "a\xa0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateTapName(TapName(s)); err != nil {
			t.Fatalf("TapName(%q) = %q is not valid: %v", s, TapName(s), err)
		}
		err := ValidateTapName(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "tap name ") {
				t.Fatalf("ValidateTapName(%q) = %v, want an InvalidError", s, err)
			}
			return
		}
		if len(s) < 1 || len(s) > 15 || s == "." || s == ".." {
			t.Fatalf("ValidateTapName(%q) accepted it", s)
		}
		for i := 0; i < len(s); i++ {
			// Bytes, not runes: the kernel sees bytes.
			if c := s[i]; c < 0x20 || c == 0x7f || c == 0xa0 || strings.IndexByte("/: %", c) >= 0 {
				t.Fatalf("ValidateTapName(%q) accepted byte %#x", s, c)
			}
		}
	})
}
