package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// devices are the spec's device settings that are written as text (rates
// and the balloon size), parsed into what the driver takes.
type devices struct {
	driveRate *vmm.RateLimiter // nil: none
	netRate   *vmm.RateLimiter // nil: none
	balloon   *vmm.Balloon     // nil: none
}

// devices parses the spec's device settings. The same rules hold whether
// they came from flags or a config file; the errors are one line each,
// naming the setting and what it takes.
func (s Spec) devices() (devices, error) {
	var d devices
	var err error
	if s.VMMLogLevel != "" && !slices.Contains(vmmLogLevels, strings.ToLower(s.VMMLogLevel)) {
		return devices{}, fmt.Errorf("vmm_log_level %q: unknown level (give one of %s)", s.VMMLogLevel, strings.Join(vmmLogLevels, ", "))
	}
	if s.DriveRate != "" {
		if d.driveRate, err = network.ParseRate(s.DriveRate); err != nil {
			return devices{}, fmt.Errorf("drive_rate: %w", err)
		}
	}
	if s.NetRate != "" {
		if d.netRate, err = network.ParseRate(s.NetRate); err != nil {
			return devices{}, fmt.Errorf("net_rate: %w", err)
		}
	}
	if s.Balloon != "" {
		mib := 0
		if strings.TrimSpace(s.Balloon) != "0" {
			if mib, err = ParseMemory(s.Balloon); err != nil {
				return devices{}, fmt.Errorf("balloon: %w", err)
			}
		}
		d.balloon = &vmm.Balloon{AmountMiB: mib, DeflateOnOOM: true}
	}
	return d, nil
}

// maxMetadata is the largest metadata document Firecracker takes by
// default (its --mmds-size-limit).
const maxMetadata = 51200

// resolveMetadata replaces a metadata file's path in s with the file's
// JSON, and checks the JSON: an object, small enough, and a network
// interface for the guest to reach it through.
func resolveMetadata(s *Spec) error {
	m := strings.TrimSpace(s.Metadata)
	if m == "" {
		s.Metadata = ""
		return nil
	}
	what := "metadata"
	if !strings.HasPrefix(m, "{") {
		b, err := os.ReadFile(m)
		if err != nil {
			return fmt.Errorf("metadata file: %w: give a JSON file, or the JSON itself starting with {", err)
		}
		what, m = fmt.Sprintf("metadata file %s", m), string(b)
	}
	var v any
	if err := json.Unmarshal([]byte(m), &v); err != nil {
		return fmt.Errorf("%s: not JSON: %w (give an object such as {\"latest\": {}})", what, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("%s: not a JSON object (give an object such as {\"latest\": {}})", what)
	}
	if len(m) > maxMetadata {
		return fmt.Errorf("%s: %d bytes, more than Firecracker's limit of %d", what, len(m), maxMetadata)
	}
	if len(s.Net) == 0 {
		return fmt.Errorf("%s: the guest reads it through a network interface: add one (--net, or net in a config file)", what)
	}
	s.Metadata = m
	return nil
}

// vmmLogLevels are the levels of Firecracker's log, as Spec.VMMLogLevel
// takes them.
var vmmLogLevels = []string{"error", "warning", "info", "debug", "trace", "off"}

// applyDevices puts the spec's device settings into cfg. The spec was
// checked when the sandbox was created, so settings that do not parse
// (none should) are left out.
func applyDevices(s Spec, cfg *vmm.Config) {
	cfg.CPUTemplate = s.CPUTemplate
	if s.VMMLogLevel != "" {
		// Firecracker spells its levels capitalised; accept any case.
		cfg.LogLevel = strings.ToUpper(s.VMMLogLevel[:1]) + strings.ToLower(s.VMMLogLevel[1:])
	}
	if s.Entropy {
		cfg.Entropy = &vmm.Entropy{}
	}
	if s.Metadata != "" {
		cfg.MMDS = &vmm.MMDS{Data: json.RawMessage(s.Metadata)}
	}
	d, err := s.devices()
	if err != nil {
		return
	}
	cfg.Balloon = d.balloon
	for i := range cfg.Drives {
		cfg.Drives[i].RateLimiter = copyLimiter(d.driveRate)
	}
	for i := range cfg.NetworkInterfaces {
		cfg.NetworkInterfaces[i].RxRateLimiter = copyLimiter(d.netRate)
		cfg.NetworkInterfaces[i].TxRateLimiter = copyLimiter(d.netRate)
	}
}

// copyLimiter is a copy of r of its own (nil for nil), so that no two
// devices share one.
func copyLimiter(r *vmm.RateLimiter) *vmm.RateLimiter {
	if r == nil {
		return nil
	}
	c := *r
	if r.Bandwidth != nil {
		b := *r.Bandwidth
		c.Bandwidth = &b
	}
	if r.Ops != nil {
		o := *r.Ops
		c.Ops = &o
	}
	return &c
}
