package sandbox

import (
	"crypto/rand"
	"encoding/hex"
)

// newID returns a fresh random sandbox ID of 12 lowercase hex digits (48
// bits from crypto/rand). It always passes store.ValidateID. It lives here
// rather than in internal/store so that the small monitor, which imports
// the store, does not link crypto/rand.
func newID() string {
	var b [6]byte
	rand.Read(b[:]) // never returns an error (crypto/rand, Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}
