package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Name prefixes of what kindling creates on the host; Leaks looks for them.
const (
	// cniNetNSPrefix starts the namespace of a sandbox on a CNI network:
	// "kindling-<sandbox ID>".
	cniNetNSPrefix = "kindling-"
	// slotNetNSPrefix starts a slot's namespace: "kdslot-<index>".
	slotNetNSPrefix = "kdslot-"
	// slotVethPrefix starts the host end of a slot's veth: "kdh<index>".
	slotVethPrefix = "kdh"
	// tablePrefix starts every nf_tables table kindling makes.
	tablePrefix       = "kindling_"
	portsTablePrefix  = tablePrefix + "p_"
	egressTablePrefix = tablePrefix + "eg_"
)

// ValidateID checks a sandbox ID as the state store does:
// [A-Za-z0-9][A-Za-z0-9_.-]{0,63}.
func ValidateID(id string) error {
	if id == "" || len(id) > 64 {
		return invalid("sandbox ID", id, "must be 1 to 64 bytes of [A-Za-z0-9_.-], starting with a letter or digit")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '_' || c == '.' || c == '-')
		if !ok {
			return invalid("sandbox ID", id, "must be 1 to 64 bytes of [A-Za-z0-9_.-], starting with a letter or digit")
		}
	}
	return nil
}

// CNINetNSName is the name of the namespace CNI.Attach makes for a sandbox.
func CNINetNSName(sandboxID string) string { return cniNetNSPrefix + sandboxID }

func slotVethName(index int) string { return fmt.Sprintf("%s%d", slotVethPrefix, index) }

// idKey is a short stable key of a sandbox ID for nf_tables names: the
// first 12 hex digits of its SHA-256.
func idKey(sandboxID string) string {
	sum := sha256.Sum256([]byte("kindling net\x00" + sandboxID))
	return hex.EncodeToString(sum[:6])
}

func portsTableName(sandboxID string) string  { return portsTablePrefix + idKey(sandboxID) }
func egressTableName(sandboxID string) string { return egressTablePrefix + idKey(sandboxID) }
