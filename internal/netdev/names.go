package netdev

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
)

// MaxTapNameLen is the longest interface name Linux accepts (IFNAMSIZ - 1).
const MaxTapNameLen = 15

// tapPrefix starts every name made by TapName, so kindling's taps are easy
// to spot in `ip link`.
const tapPrefix = "kd"

// ValidateTapName checks that name is a valid Linux interface name: 1 to 15
// bytes, no '/', ':' or whitespace (as the kernel's isspace sees it, which
// includes byte 0xa0), not "." or "..". It is stricter than the kernel in
// two ways: control bytes are refused, and so is '%', which the kernel
// would expand as a template ("tap%d" → "tap0") instead of using the name
// as given. The error is an *InvalidError naming the name and the rule.
func ValidateTapName(name string) error {
	return validateIfName("tap name", name)
}

func validateIfName(what, name string) error {
	switch {
	case name == "":
		return invalid(what, name, "empty")
	case len(name) > MaxTapNameLen:
		return invalid(what, name, fmt.Sprintf("longer than %d bytes", MaxTapNameLen))
	case name == "." || name == "..":
		return invalid(what, name, `"." and ".." are reserved`)
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '/':
			return invalid(what, name, "contains '/'")
		case c == ':':
			return invalid(what, name, "contains ':'")
		case c == '%':
			return invalid(what, name, "contains '%' (the kernel reads it as a name template)")
		case c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' || c == 0xa0:
			return invalid(what, name, "contains whitespace")
		case c < 0x20 || c == 0x7f:
			return invalid(what, name, fmt.Sprintf("contains control byte %#02x", c))
		}
	}
	return nil
}

// TapName returns the tap name kindling uses for a sandbox: "kd" followed by
// the first 12 hex digits of the SHA-256 of sandboxID (14 bytes). It is
// stable across runs and hosts, always valid, and distinct for distinct IDs
// with high probability (48 bits of hash).
func TapName(sandboxID string) string {
	sum := sha256.Sum256([]byte("kindling tap\x00" + sandboxID))
	return tapPrefix + hex.EncodeToString(sum[:6])
}

// MAC returns a stable guest MAC address for a sandbox, derived from the
// SHA-256 of sandboxID: a locally administered (bit 1 of the first octet
// set), unicast (bit 0 clear) address. The hash input differs from
// TapName's, so the two are independent.
func MAC(sandboxID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("kindling mac\x00" + sandboxID))
	mac := net.HardwareAddr(sum[:6:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// ParseMAC parses a 6-byte MAC address in any form net.ParseMAC accepts
// (aa:bb:cc:dd:ee:ff, aa-bb-…, aabb.ccdd.eeff) and checks it can be a
// guest's own address: unicast and not all zeros. Errors are *InvalidError.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, invalid("MAC", s, "not a MAC address (want six hex pairs, like 02:00:00:00:00:01)")
	}
	if len(mac) != 6 {
		return nil, invalid("MAC", s, fmt.Sprintf("%d bytes long, want 6", len(mac)))
	}
	if mac[0]&0x01 != 0 {
		return nil, invalid("MAC", s, "multicast or broadcast (lowest bit of the first octet is set), want unicast")
	}
	if mac.String() == "00:00:00:00:00:00" {
		return nil, invalid("MAC", s, "all zeros")
	}
	return mac, nil
}
