package vmm

import (
	"encoding/json"
	"reflect"
	"strings"
)

// Before Config and its device types had JSON tags, they were stored with
// their Go field names as keys ("RunDir", "TapName"). Each type below
// decodes both spellings: a key that is a field's Go name, where that
// differs from its JSON name, is read as the JSON name (the JSON name wins
// when a file has both). Encoding always uses the JSON names. MachineState
// files of that time carry version 1 (see StateVersion).

// UnmarshalJSON decodes c, also from the Go field names of version 1.
func (c *Config) UnmarshalJSON(b []byte) error {
	type plain Config
	return decodeEitherSpelling(b, (*plain)(c))
}

// UnmarshalJSON decodes d, also from the Go field names of version 1.
func (d *Drive) UnmarshalJSON(b []byte) error {
	type plain Drive
	return decodeEitherSpelling(b, (*plain)(d))
}

// UnmarshalJSON decodes n, also from the Go field names of version 1.
func (n *NetworkInterface) UnmarshalJSON(b []byte) error {
	type plain NetworkInterface
	return decodeEitherSpelling(b, (*plain)(n))
}

// UnmarshalJSON decodes v, also from the Go field names of version 1.
func (v *Vsock) UnmarshalJSON(b []byte) error {
	type plain Vsock
	return decodeEitherSpelling(b, (*plain)(v))
}

// UnmarshalJSON decodes e, also from the Go field names of version 1.
func (e *Entropy) UnmarshalJSON(b []byte) error {
	type plain Entropy
	return decodeEitherSpelling(b, (*plain)(e))
}

// UnmarshalJSON decodes bl, also from the Go field names of version 1.
func (bl *Balloon) UnmarshalJSON(b []byte) error {
	type plain Balloon
	return decodeEitherSpelling(b, (*plain)(bl))
}

// UnmarshalJSON decodes h, also from the Go field names of version 1.
func (h *MemoryHotplug) UnmarshalJSON(b []byte) error {
	type plain MemoryHotplug
	return decodeEitherSpelling(b, (*plain)(h))
}

// UnmarshalJSON decodes r, also from the Go field names of version 1.
func (r *RateLimiter) UnmarshalJSON(b []byte) error {
	type plain RateLimiter
	return decodeEitherSpelling(b, (*plain)(r))
}

// UnmarshalJSON decodes t, also from the Go field names of version 1.
func (t *TokenBucket) UnmarshalJSON(b []byte) error {
	type plain TokenBucket
	return decodeEitherSpelling(b, (*plain)(t))
}

// UnmarshalJSON decodes j, also from the Go field names of version 1.
func (j *JailerConfig) UnmarshalJSON(b []byte) error {
	type plain JailerConfig
	return decodeEitherSpelling(b, (*plain)(j))
}

// decodeEitherSpelling decodes the JSON object b into v, a pointer to a
// struct without methods, renaming keys that are Go field names to the
// fields' JSON names first.
func decodeEitherSpelling(b []byte, v any) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return json.Unmarshal(b, v) // not an object (or null): let json say so
	}
	t := reflect.TypeOf(v).Elem()
	renamed := false
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || name == f.Name {
			continue
		}
		raw, old := obj[f.Name]
		if !old {
			continue
		}
		if _, both := obj[name]; !both {
			obj[name] = raw
		}
		delete(obj, f.Name)
		renamed = true
	}
	if renamed {
		var err error
		if b, err = json.Marshal(obj); err != nil {
			return err
		}
	}
	return json.Unmarshal(b, v)
}
