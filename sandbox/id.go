package sandbox

import (
	"crypto/rand"
	"encoding/hex"
)

// NewID returns a fresh random sandbox ID of 12 lowercase hex digits (48
// bits from crypto/rand), as the runtime gives a sandbox created without
// one; for callers that must know a sandbox's ID before it exists. It
// always passes store.ValidateID. It lives here rather than in
// internal/store so that the small monitor, which imports the store, does
// not link crypto/rand.
func NewID() string {
	var b [6]byte
	rand.Read(b[:]) // never returns an error (crypto/rand, Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}
