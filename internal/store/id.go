package store

import (
	"fmt"
)

// MaxIDLen is the longest sandbox ID ValidateID accepts, in bytes.
const MaxIDLen = 64

// idRule is the rule ValidateID enforces, as it appears in error messages.
const idRule = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

// ValidateID reports whether id can name a sandbox: 1 to 64 ASCII letters,
// digits, '_', '.' or '-', starting with a letter or a digit. Such an ID is a
// single, safe path element: never empty, ".", "..", a path with a '/', or a
// name that a command line could take for a flag. The error matches
// ErrInvalidID and names the ID and the rule.
func ValidateID(id string) error {
	if !validID(id) {
		return fmt.Errorf("sandbox ID %s: %w", quoteID(id), ErrInvalidID)
	}
	return nil
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen || !isAlnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// quoteID quotes an ID for an error message, shortening one far longer than
// any valid ID so that a message stays one readable line.
func quoteID(id string) string {
	const show = 2 * MaxIDLen
	if len(id) > show {
		return fmt.Sprintf("%q...", id[:show])
	}
	return fmt.Sprintf("%q", id)
}
