package fakefc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// kind is the JSON type a field accepts.
type kind int

const (
	kindAny     kind = iota // any JSON value
	kindBool                // true or false
	kindUint                // non-negative integer
	kindString              // string
	kindEnum                // string among field.enum
	kindObject              // object checked against field.sub
	kindObjects             // array of objects checked against field.sub
	kindStrings             // array of strings
)

// enumValue is one accepted value of an enum field and the release that
// introduced it.
type enumValue struct {
	name  string
	since Version
	until Version // first release refusing it again; zero: still accepted
}

// field describes one JSON field of a request body.
type field struct {
	name  string
	kind  kind
	since Version // first release accepting the field; zero: always
	until Version // first release refusing it again; zero: still accepted
	// required makes the field mandatory from since until reqUntil (zero:
	// for as long as the field exists).
	required bool
	reqUntil Version
	enum     []enumValue
	sub      *schema
	// max bounds a kindUint (0: no bound) whose Rust type is rust.
	max  int64
	rust string
	// def is shown in GET answers when the field was never set; nil shows
	// JSON null.
	def any
	// hidden fields are shown in GET answers only when they were set;
	// writeOnly fields are never shown.
	hidden    bool
	writeOnly bool
}

// schema is the set of fields of one request body (a Rust struct with
// deny_unknown_fields in the real Firecracker).
type schema struct {
	name   string // the struct name Firecracker's errors report (as of v1.14)
	fields []field
}

// accepts returns the fields of s known to release v, in declaration order.
func (s *schema) accepts(v Version) []field {
	var out []field
	for _, f := range s.fields {
		if v.within(f.since, f.until) {
			out = append(out, f)
		}
	}
	return out
}

// requiredIn reports whether f is mandatory in release v.
func (f field) requiredIn(v Version) bool {
	return f.required && v.within(f.since, f.reqUntil)
}

var (
	v0_24_3 = mustVersion("0.24.3")
	v0_25   = mustVersion("0.25.0")
	v1_0    = mustVersion("1.0.0")
	v1_1    = mustVersion("1.1.0")
	v1_1_1  = mustVersion("1.1.1")
	v1_3    = mustVersion("1.3.0")
	v1_4    = mustVersion("1.4.0")
	v1_5    = mustVersion("1.5.0")
	v1_6    = mustVersion("1.6.0")
	v1_7    = mustVersion("1.7.0")
	v1_11   = mustVersion("1.11.0")
	v1_12   = mustVersion("1.12.0")
	v1_13   = mustVersion("1.13.0")
	v1_14   = mustVersion("1.14.0")
	v1_14_4 = mustVersion("1.14.4")
	v1_16   = mustVersion("1.16.0")
)

// The field table. Each release's accepted fields come from its published
// API description (see api-first-seen.txt in the Firecracker reference).
var (
	tokenBucketSchema = &schema{name: "TokenBucketConfig", fields: []field{
		{name: "size", kind: kindUint, rust: "u64", required: true},
		{name: "one_time_burst", kind: kindUint, rust: "u64"},
		{name: "refill_time", kind: kindUint, rust: "u64", required: true},
	}}
	rateLimiterSchema = &schema{name: "RateLimiterConfig", fields: []field{
		{name: "bandwidth", kind: kindObject, sub: tokenBucketSchema},
		{name: "ops", kind: kindObject, sub: tokenBucketSchema},
	}}

	machineConfigSchema = &schema{name: "MachineConfig", fields: []field{
		{name: "vcpu_count", kind: kindUint, max: 255, rust: "u8", required: true, def: 1},
		{name: "mem_size_mib", kind: kindUint, rust: "usize", required: true, def: 128},
		{name: "ht_enabled", kind: kindBool, until: v1_0, required: true, def: false},
		{name: "smt", kind: kindBool, since: v1_0, def: false},
		{name: "cpu_template", kind: kindEnum, hidden: true, enum: []enumValue{
			{name: "C3"}, {name: "T2"}, {name: "T2S", since: v1_1_1}, {name: "T2CL", since: v1_3},
			{name: "T2A", since: v1_3}, {name: "V1N1", since: v1_4}, {name: "None", since: v1_1},
		}},
		{name: "track_dirty_pages", kind: kindBool, def: false},
		{name: "huge_pages", kind: kindEnum, since: v1_7, def: "None", enum: []enumValue{{name: "None"}, {name: "2M"}}},
	}}

	bootSourceSchema = &schema{name: "BootSourceConfig", fields: []field{
		{name: "kernel_image_path", kind: kindString, required: true, def: ""},
		{name: "initrd_path", kind: kindString},
		{name: "boot_args", kind: kindString},
	}}

	driveSchema = &schema{name: "BlockDeviceConfig", fields: []field{
		{name: "drive_id", kind: kindString, required: true},
		{name: "partuuid", kind: kindString},
		{name: "is_root_device", kind: kindBool, required: true},
		{name: "cache_type", kind: kindEnum, since: v0_25, def: "Unsafe", enum: []enumValue{{name: "Unsafe"}, {name: "Writeback", since: v1_0}}},
		{name: "is_read_only", kind: kindBool, required: true, reqUntil: v1_7},
		{name: "path_on_host", kind: kindString, required: true, reqUntil: v1_7},
		{name: "rate_limiter", kind: kindObject, sub: rateLimiterSchema},
		{name: "io_engine", kind: kindEnum, since: v1_0, def: "Sync", enum: []enumValue{{name: "Sync"}, {name: "Async"}}},
		{name: "socket", kind: kindString, since: v1_6},
	}}
	partialDriveSchema = &schema{name: "BlockDeviceUpdateConfig", fields: []field{
		{name: "drive_id", kind: kindString, required: true},
		{name: "path_on_host", kind: kindString},
		{name: "rate_limiter", kind: kindObject, sub: rateLimiterSchema},
	}}

	netSchema = &schema{name: "NetworkInterfaceConfig", fields: []field{
		{name: "iface_id", kind: kindString, required: true},
		{name: "host_dev_name", kind: kindString, required: true},
		{name: "guest_mac", kind: kindString},
		{name: "mtu", kind: kindUint, max: 65535, rust: "u16", since: v1_16, hidden: true},
		{name: "allow_mmds_requests", kind: kindBool, until: v1_0, def: false},
		{name: "rx_rate_limiter", kind: kindObject, sub: rateLimiterSchema},
		{name: "tx_rate_limiter", kind: kindObject, sub: rateLimiterSchema},
	}}
	partialNetSchema = &schema{name: "NetworkInterfaceUpdateConfig", fields: []field{
		{name: "iface_id", kind: kindString, required: true},
		{name: "rx_rate_limiter", kind: kindObject, sub: rateLimiterSchema},
		{name: "tx_rate_limiter", kind: kindObject, sub: rateLimiterSchema},
	}}

	vsockSchema = &schema{name: "VsockDeviceConfig", fields: []field{
		{name: "vsock_id", kind: kindString, required: true, reqUntil: v1_0, writeOnly: true},
		{name: "guest_cid", kind: kindUint, max: 1<<32 - 1, rust: "u32", required: true},
		{name: "uds_path", kind: kindString, required: true},
	}}

	loggerSchema = &schema{name: "LoggerConfig", fields: []field{
		{name: "log_path", kind: kindString, required: true, reqUntil: v1_7},
		{name: "level", kind: kindEnum, enum: []enumValue{
			{name: "Error"}, {name: "Warning"}, {name: "Info"}, {name: "Debug"},
			{name: "Trace", since: v1_5}, {name: "Off", since: v1_5},
		}},
		{name: "show_level", kind: kindBool},
		{name: "show_log_origin", kind: kindBool},
		{name: "module", kind: kindString, since: v1_6},
	}}

	metricsSchema = &schema{name: "MetricsConfig", fields: []field{
		{name: "metrics_path", kind: kindString, required: true},
	}}

	mmdsConfigSchema = &schema{name: "MmdsConfig", fields: []field{
		{name: "version", kind: kindEnum, since: v1_0, def: "V1", enum: []enumValue{{name: "V1"}, {name: "V2"}}},
		{name: "network_interfaces", kind: kindStrings, since: v1_0, required: true},
		{name: "ipv4_address", kind: kindString, def: "169.254.169.254"},
		// The v1.13.0 description spells it "imds_comat"; the server took
		// "imds_compat" from v1.13.0 on.
		{name: "imds_compat", kind: kindBool, since: v1_13, def: false},
	}}

	balloonSchema = &schema{name: "BalloonDeviceConfig", fields: []field{
		{name: "amount_mb", kind: kindUint, max: 1<<32 - 1, rust: "u32", until: v0_24_3, required: true},
		{name: "amount_mib", kind: kindUint, max: 1<<32 - 1, rust: "u32", since: v0_24_3, required: true},
		{name: "deflate_on_oom", kind: kindBool, required: true},
		{name: "stats_polling_interval_s", kind: kindUint, max: 65535, rust: "u16", def: 0},
		{name: "free_page_hinting", kind: kindBool, since: v1_14, def: false},
		{name: "free_page_reporting", kind: kindBool, since: v1_14, def: false},
	}}
	balloonUpdateSchema = &schema{name: "BalloonUpdateConfig", fields: []field{
		{name: "amount_mb", kind: kindUint, max: 1<<32 - 1, rust: "u32", until: v0_24_3, required: true},
		{name: "amount_mib", kind: kindUint, max: 1<<32 - 1, rust: "u32", since: v0_24_3, required: true},
	}}
	balloonStatsUpdateSchema = &schema{name: "BalloonUpdateStatsConfig", fields: []field{
		{name: "stats_polling_interval_s", kind: kindUint, max: 65535, rust: "u16", required: true},
	}}
	balloonStartSchema = &schema{name: "StartHintingCmd", fields: []field{
		{name: "acknowledge_on_stop", kind: kindBool},
	}}

	entropySchema = &schema{name: "EntropyDeviceConfig", fields: []field{
		{name: "rate_limiter", kind: kindObject, sub: rateLimiterSchema},
	}}

	cpuConfigSchema = &schema{name: "CustomCpuTemplate", fields: []field{
		{name: "kvm_capabilities", kind: kindAny, since: v1_11},
		{name: "cpuid_modifiers", kind: kindAny},
		{name: "msr_modifiers", kind: kindAny},
		{name: "reg_modifiers", kind: kindAny},
		{name: "vcpu_features", kind: kindAny, since: v1_11},
	}}

	serialSchema = &schema{name: "SerialConfig", fields: []field{
		{name: "serial_out_path", kind: kindString},
		{name: "rate_limiter", kind: kindObject, sub: rateLimiterSchema, since: v1_16},
	}}

	hotplugSchema = &schema{name: "MemoryHotplugConfig", fields: []field{
		{name: "total_size_mib", kind: kindUint, rust: "usize", def: 0},
		{name: "block_size_mib", kind: kindUint, rust: "usize", def: 2},
		{name: "slot_size_mib", kind: kindUint, rust: "usize", def: 128},
	}}
	hotplugUpdateSchema = &schema{name: "MemoryHotplugSizeUpdate", fields: []field{
		{name: "requested_size_mib", kind: kindUint, rust: "usize"},
	}}

	pmemSchema = &schema{name: "PmemConfig", fields: []field{
		{name: "id", kind: kindString, required: true},
		{name: "path_on_host", kind: kindString, required: true},
		{name: "root_device", kind: kindBool, def: false},
		{name: "read_only", kind: kindBool, def: false},
		{name: "rate_limiter", kind: kindObject, sub: rateLimiterSchema, since: v1_16},
	}}
	partialPmemSchema = &schema{name: "PartialPmem", fields: []field{
		{name: "id", kind: kindString, required: true},
		{name: "rate_limiter", kind: kindObject, sub: rateLimiterSchema},
	}}

	actionSchema = &schema{name: "ActionBody", fields: []field{
		{name: "action_type", kind: kindEnum, required: true, enum: []enumValue{
			{name: "BlockDeviceRescan", until: v1_0}, {name: "FlushMetrics"}, {name: "InstanceStart"}, {name: "SendCtrlAltDel"},
		}},
	}}

	vmStateSchema = &schema{name: "Vm", fields: []field{
		{name: "state", kind: kindEnum, required: true, enum: []enumValue{{name: "Paused"}, {name: "Resumed"}}},
	}}

	snapshotCreateSchema = &schema{name: "CreateSnapshotParams", fields: []field{
		{name: "snapshot_type", kind: kindEnum, enum: []enumValue{{name: "Full"}, {name: "Diff"}}},
		{name: "snapshot_path", kind: kindString, required: true},
		{name: "mem_file_path", kind: kindString, required: true},
		{name: "version", kind: kindString, until: v1_6},
	}}

	memBackendSchema = &schema{name: "MemBackendConfig", fields: []field{
		{name: "backend_type", kind: kindEnum, required: true, enum: []enumValue{{name: "File"}, {name: "Uffd"}}},
		{name: "backend_path", kind: kindString, required: true},
	}}
	networkOverrideSchema = &schema{name: "NetworkOverride", fields: []field{
		{name: "iface_id", kind: kindString, required: true},
		{name: "host_dev_name", kind: kindString, required: true},
	}}
	vsockOverrideSchema = &schema{name: "VsockOverride", fields: []field{
		{name: "uds_path", kind: kindString, required: true},
	}}
	snapshotLoadSchema = &schema{name: "LoadSnapshotConfig", fields: []field{
		{name: "snapshot_path", kind: kindString, required: true},
		{name: "mem_file_path", kind: kindString, required: true, reqUntil: v1_1},
		{name: "mem_backend", kind: kindObject, sub: memBackendSchema, since: v1_1},
		{name: "enable_diff_snapshots", kind: kindBool},
		{name: "track_dirty_pages", kind: kindBool, since: v1_13},
		{name: "resume_vm", kind: kindBool},
		{name: "network_overrides", kind: kindObjects, sub: networkOverrideSchema, since: v1_12},
		{name: "vsock_override", kind: kindObject, sub: vsockOverrideSchema, since: v1_16},
		{name: "clock_realtime", kind: kindBool, since: v1_14_4},
	}}
)

// enumIn returns the names of f's enum values known to release v.
func (f field) enumIn(v Version) []string {
	var out []string
	for _, e := range f.enum {
		if v.within(e.since, e.until) {
			out = append(out, e.name)
		}
	}
	return out
}

// decodeError is a request body refused by deserialisation, reported like
// serde_json reports it: the message and the position in the body.
type decodeError struct {
	msg          string
	line, column int
}

func (e *decodeError) Error() string {
	return fmt.Sprintf("%s at line %d column %d", e.msg, e.line, e.column)
}

// position returns the 1-based line and column of byte offset off in b.
func position(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col := 1, 0
	for _, c := range b[:off] {
		if c == '\n' {
			line++
			col = 0
			continue
		}
		col++
	}
	return line, col
}

// object is a decoded and checked request body: field name to value, with
// numbers as json.Number and nested objects as object.
type object map[string]any

// decodeBody checks body against s for release v and returns its fields.
// partial skips the required-field checks (PATCH bodies).
func decodeBody(body []byte, s *schema, v Version, partial bool) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, syntaxError(body, dec, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		line, col := position(body, dec.InputOffset())
		return nil, &decodeError{msg: "trailing characters", line: line, column: col}
	}
	return checkObject(body, raw, 0, s, v, partial)
}

// syntaxError turns a JSON syntax error into a decodeError.
func syntaxError(body []byte, dec *json.Decoder, err error) error {
	off := dec.InputOffset()
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	msg := serdeSyntax(err)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		msg = eofMessage(body)
	}
	line, col := position(body, off)
	return &decodeError{msg: msg, line: line, column: col}
}

// serdeSyntax words a JSON syntax error as serde_json does. encoding/json
// gives no typed reason, so its message is the only thing to go by.
func serdeSyntax(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "EOF while parsing a value"
	}
	m := err.Error()
	switch {
	case strings.Contains(m, "in literal"):
		return "expected ident"
	case strings.Contains(m, "'}' looking for beginning of object key string"),
		strings.Contains(m, "']' looking for beginning of value"):
		return "trailing comma"
	case strings.Contains(m, "looking for beginning of value"):
		return "expected value"
	case strings.Contains(m, "looking for beginning of object key string"):
		return "key must be a string"
	case strings.Contains(m, "after object key:value pair"):
		return "expected `,` or `}`"
	case strings.Contains(m, "after object key"):
		return "expected `:`"
	case strings.Contains(m, "after array element"):
		return "expected `,` or `]`"
	}
	return m
}

// eofMessage words a body that ends too early as serde_json does, from
// the innermost object or array left open.
func eofMessage(body []byte) string {
	var open []byte
	inString, escaped := false, false
	var last byte
	for _, c := range body {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			open = append(open, c)
		case (c == '}' || c == ']') && len(open) > 0:
			open = open[:len(open)-1]
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			last = c
		}
	}
	switch {
	case len(open) == 0 || last == ':' || inString:
		return "EOF while parsing a value"
	case open[len(open)-1] == '{':
		return "EOF while parsing an object"
	}
	return "EOF while parsing a list"
}

// checkObject checks the raw object (which starts at byte base of body).
func checkObject(body []byte, raw json.RawMessage, base int64, s *schema, v Version, partial bool) (object, error) {
	at := func(off int64) (int, int) { return position(body, base+off) }
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxError(body, dec, err)
	}
	if d, ok := tok.(json.Delim); ok && d == '[' {
		return checkSequence(body, raw, base, s, v)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		l, c := at(dec.InputOffset())
		return nil, &decodeError{msg: fmt.Sprintf("invalid type: %s, expected struct %s", describe(raw), s.name), line: l, column: c}
	}
	known := s.accepts(v)
	byName := make(map[string]field, len(known))
	for _, f := range known {
		byName[f.name] = f
	}
	out := object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError(body, dec, err)
		}
		key, _ := tok.(string)
		end := dec.InputOffset()
		f, ok := byName[key]
		if !ok {
			l, c := at(end)
			return nil, &decodeError{msg: fmt.Sprintf("unknown field `%s`, %s", key, expected(names(known))), line: l, column: c}
		}
		if _, dup := out[key]; dup {
			l, c := at(end)
			return nil, &decodeError{msg: fmt.Sprintf("duplicate field `%s`", key), line: l, column: c}
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, syntaxError(body, dec, err)
		}
		valStart := dec.InputOffset() - int64(len(val))
		x, err := checkValue(body, val, base+valStart, f, v)
		if err != nil {
			return nil, err
		}
		out[key] = x
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntaxError(body, dec, err)
	}
	if !partial {
		for _, f := range known {
			if _, ok := out[f.name]; !ok && f.requiredIn(v) {
				l, c := at(dec.InputOffset())
				return nil, &decodeError{msg: fmt.Sprintf("missing field `%s`", f.name), line: l, column: c}
			}
		}
	}
	return out, nil
}

// checkSequence checks a JSON array given for a struct: like serde, it
// fills the fields in declaration order, and fields with a default may be
// left out at the end.
func checkSequence(body []byte, raw json.RawMessage, base int64, s *schema, v Version) (object, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		line, col := position(body, base+int64(len(raw)))
		return nil, &decodeError{msg: serdeSyntax(err), line: line, column: col}
	}
	known := s.accepts(v)
	line, col := position(body, base+int64(len(raw)))
	if len(items) > len(known) {
		return nil, &decodeError{msg: "trailing characters", line: line, column: col}
	}
	for i := len(items); i < len(known); i++ {
		if known[i].requiredIn(v) {
			return nil, &decodeError{msg: fmt.Sprintf("invalid length %d, expected struct %s with %d elements", len(items), s.name, len(known)), line: line, column: col}
		}
	}
	out := object{}
	for i, it := range items {
		x, err := checkValue(body, it, base, known[i], v)
		if err != nil {
			return nil, err
		}
		out[known[i].name] = x
	}
	return out, nil
}

// checkValue checks one field's value; null is accepted for optional fields
// as serde accepts it for Option.
func checkValue(body []byte, val json.RawMessage, off int64, f field, v Version) (any, error) {
	bad := func(what string) error {
		l, c := position(body, off+int64(len(val)))
		return &decodeError{msg: fmt.Sprintf("invalid type: %s, expected %s", describe(val), what), line: l, column: c}
	}
	if string(val) == "null" && !f.requiredIn(v) {
		return nil, nil
	}
	switch f.kind {
	case kindAny:
		var x any
		d := json.NewDecoder(bytes.NewReader(val))
		d.UseNumber()
		if err := d.Decode(&x); err != nil {
			return nil, bad("a value")
		}
		return x, nil
	case kindBool:
		var b bool
		if err := json.Unmarshal(val, &b); err != nil {
			return nil, bad("a boolean")
		}
		return b, nil
	case kindUint:
		rust := f.rust
		if rust == "" {
			rust = "u64"
		}
		t := bytes.TrimSpace(val)
		if len(t) == 0 || (t[0] != '-' && (t[0] < '0' || t[0] > '9')) || bytes.ContainsAny(t, ".eE") {
			return nil, bad(rust)
		}
		n := json.Number(t)
		x, err := n.Int64()
		if err != nil || x < 0 || (f.max > 0 && x > f.max) {
			l, c := position(body, off+int64(len(val)))
			return nil, &decodeError{msg: fmt.Sprintf("invalid value: integer `%s`, expected %s", t, rust), line: l, column: c}
		}
		return n, nil
	case kindString:
		var s string
		if err := json.Unmarshal(val, &s); err != nil {
			return nil, bad("a string")
		}
		return s, nil
	case kindEnum:
		var s string
		if err := json.Unmarshal(val, &s); err != nil {
			return nil, bad("a string")
		}
		allowed := f.enumIn(v)
		for _, a := range allowed {
			if a == s {
				return s, nil
			}
		}
		l, c := position(body, off+int64(len(val)))
		return nil, &decodeError{msg: fmt.Sprintf("unknown variant `%s`, %s", s, expected(allowed)), line: l, column: c}
	case kindStrings:
		var ss []string
		if err := json.Unmarshal(val, &ss); err != nil {
			return nil, bad("a sequence")
		}
		out := make([]any, len(ss))
		for i, s := range ss {
			out[i] = s
		}
		return out, nil
	case kindObject:
		return checkObject(body, val, off, f.sub, v, false)
	case kindObjects:
		var items []json.RawMessage
		if err := json.Unmarshal(val, &items); err != nil {
			return nil, bad("a sequence")
		}
		out := make([]any, 0, len(items))
		for _, it := range items {
			// The offset of each item is approximate: errors inside an
			// array report the array's position.
			o, err := checkObject(body, it, off, f.sub, v, false)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
		return out, nil
	}
	return nil, bad("a value")
}

// describe names a JSON value the way serde does in "invalid type" errors.
func describe(val json.RawMessage) string {
	t := bytes.TrimSpace(val)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '"':
		return "string " + string(t)
	case '{':
		return "map"
	case '[':
		return "sequence"
	case 't', 'f':
		return "boolean `" + string(t) + "`"
	case 'n':
		return "null"
	}
	if bytes.ContainsAny(t, ".eE") {
		return "floating point `" + string(t) + "`"
	}
	if t[0] == '-' {
		return "integer `" + string(t) + "`"
	}
	return "integer `" + string(t) + "`"
}

// expected lists accepted names like serde: "expected one of `a`, `b`".
func expected(names []string) string {
	switch len(names) {
	case 0:
		return "there are no fields"
	case 1:
		return fmt.Sprintf("expected `%s`", names[0])
	case 2:
		return fmt.Sprintf("expected `%s` or `%s`", names[0], names[1])
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "`" + n + "`"
	}
	return "expected one of " + strings.Join(q, ", ")
}

func names(fs []field) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name
	}
	return out
}

// view renders stored fields o in the shape release v answers on GET: every
// field v knows, with its default when unset, in declaration order.
func view(s *schema, o object, v Version) orderedObject {
	var out orderedObject
	for _, f := range s.accepts(v) {
		if f.writeOnly {
			continue
		}
		x, set := o[f.name]
		if !set {
			if f.hidden {
				continue
			}
			x = f.def
		}
		if sub := asObject(x); sub != nil && f.sub != nil && f.kind == kindObject {
			x = view(f.sub, sub, v)
		}
		out = append(out, kv{f.name, x})
	}
	return out
}

// kv is one key of an orderedObject.
type kv struct {
	key string
	val any
}

// orderedObject is a JSON object that keeps its key order when marshalled.
type orderedObject []kv

// MarshalJSON writes the keys in order.
func (o orderedObject) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(e.key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		x, err := json.Marshal(e.val)
		if err != nil {
			return nil, err
		}
		b.Write(x)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
