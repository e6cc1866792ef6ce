package fcapi

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// Feature names a part of the Firecracker API that not every v1 release has.
// Its value is a readable name, used in *NotSupportedError messages.
type Feature string

// Features whose presence depends on the release.
const (
	FeatureMemBackend         Feature = "snapshot memory backend"
	FeatureUffd               Feature = "UFFD snapshot memory backend"
	FeatureCPUTemplateNone    Feature = "CPU template None"
	FeatureCPUTemplateT2S     Feature = "CPU template T2S"
	FeatureCPUTemplateT2A     Feature = "CPU template T2A/T2CL"
	FeatureCPUTemplateV1N1    Feature = "CPU template V1N1"
	FeatureCPUConfig          Feature = "custom CPU templates"
	FeatureEntropy            Feature = "entropy device"
	FeatureLoggerTrace        Feature = "logger levels Trace and Off"
	FeatureSnapshotVersion    Feature = "snapshot version"
	FeatureVhostUserBlock     Feature = "vhost-user block devices"
	FeatureLoggerModule       Feature = "logger module filter"
	FeatureHugePages          Feature = "huge pages"
	FeatureCPUConfigKVM       Feature = "CPU template KVM capabilities and vCPU features"
	FeatureNetworkOverrides   Feature = "snapshot network overrides"
	FeatureTrackDirtyOnLoad   Feature = "snapshot load track_dirty_pages"
	FeatureIMDSCompat         Feature = "MMDS IMDS compatibility"
	FeatureMemoryHotplug      Feature = "memory hotplug"
	FeatureSerial             Feature = "serial device configuration"
	FeaturePmem               Feature = "pmem devices"
	FeatureBalloonHinting     Feature = "balloon free page hinting"
	FeatureBalloonReporting   Feature = "balloon free page reporting"
	FeatureClockRealtime      Feature = "snapshot load clock_realtime"
	FeatureNetworkMTU         Feature = "network interface MTU"
	FeaturePmemPatch          Feature = "pmem rate limiter update"
	FeatureSerialRateLimiter  Feature = "serial rate limiter"
	FeatureVsockOverride      Feature = "snapshot vsock override"
	FeatureDiffSnapshots      Feature = "diff snapshots"
	FeatureVersionEndpoint    Feature = "version endpoint"
	FeatureDirtyPageTracking  Feature = "dirty page tracking"
	FeatureSnapshotLoadResume Feature = "snapshot load resume_vm"
)

func v(major, minor, patch int) Version { return Version{Major: major, Minor: minor, Patch: patch} }

// featureTable is the single source of truth for what each release accepts:
// feature → first release with it (and first release without it, if it was
// removed) → the API keys that belong to it. A key is "METHOD /route" for an
// endpoint, "Definition.field" for a request field, or
// "Definition.field=Value" for one value of an enum field (definitions and
// fields named as in Firecracker's swagger spec).
var featureTable = []struct {
	feature Feature
	since   Version
	removed Version
	keys    []string
}{
	{FeatureDiffSnapshots, v(1, 0, 0), Version{}, nil},
	{FeatureDirtyPageTracking, v(1, 0, 0), Version{}, nil},
	{FeatureSnapshotLoadResume, v(1, 0, 0), Version{}, nil},
	{FeatureVersionEndpoint, v(1, 0, 0), Version{}, []string{"GET /version"}},
	{FeatureMemBackend, v(1, 1, 0), Version{}, nil},
	{FeatureUffd, v(1, 1, 0), Version{}, nil},
	{FeatureCPUTemplateNone, v(1, 1, 0), Version{}, []string{"MachineConfiguration.cpu_template=None"}},
	{FeatureCPUTemplateT2S, v(1, 1, 1), Version{}, []string{"MachineConfiguration.cpu_template=T2S"}},
	{FeatureCPUTemplateT2A, v(1, 3, 0), Version{}, []string{"MachineConfiguration.cpu_template=T2A", "MachineConfiguration.cpu_template=T2CL"}},
	{FeatureCPUTemplateV1N1, v(1, 4, 0), Version{}, []string{"MachineConfiguration.cpu_template=V1N1"}},
	{FeatureCPUConfig, v(1, 4, 0), Version{}, []string{"PUT /cpu-config"}},
	{FeatureEntropy, v(1, 4, 0), Version{}, []string{"PUT /entropy"}},
	{FeatureLoggerTrace, v(1, 5, 0), Version{}, []string{"Logger.level=Trace", "Logger.level=Off"}},
	{FeatureSnapshotVersion, v(1, 0, 0), v(1, 6, 0), []string{"SnapshotCreateParams.version"}},
	{FeatureVhostUserBlock, v(1, 6, 0), Version{}, []string{"Drive.socket"}},
	{FeatureLoggerModule, v(1, 6, 0), Version{}, []string{"Logger.module"}},
	{FeatureHugePages, v(1, 7, 0), Version{}, []string{"MachineConfiguration.huge_pages"}},
	{FeatureCPUConfigKVM, v(1, 11, 0), Version{}, []string{"CpuConfig.kvm_capabilities", "CpuConfig.vcpu_features"}},
	{FeatureNetworkOverrides, v(1, 12, 0), Version{}, []string{"SnapshotLoadParams.network_overrides"}},
	{FeatureTrackDirtyOnLoad, v(1, 13, 0), Version{}, nil},
	{FeatureIMDSCompat, v(1, 13, 0), Version{}, []string{"MmdsConfig.imds_compat"}},
	{FeatureMemoryHotplug, v(1, 14, 0), Version{}, []string{"PUT /hotplug/memory", "PATCH /hotplug/memory", "GET /hotplug/memory"}},
	{FeatureSerial, v(1, 14, 0), Version{}, []string{"PUT /serial"}},
	{FeaturePmem, v(1, 14, 0), Version{}, []string{"PUT /pmem/{id}"}},
	{FeatureBalloonHinting, v(1, 14, 0), Version{}, []string{"Balloon.free_page_hinting", "PATCH /balloon/hinting/start", "PATCH /balloon/hinting/stop", "GET /balloon/hinting/status"}},
	{FeatureBalloonReporting, v(1, 14, 0), Version{}, []string{"Balloon.free_page_reporting"}},
	{FeatureClockRealtime, v(1, 14, 4), Version{}, []string{"SnapshotLoadParams.clock_realtime"}},
	{FeatureNetworkMTU, v(1, 16, 0), Version{}, []string{"NetworkInterface.mtu"}},
	{FeaturePmemPatch, v(1, 16, 0), Version{}, []string{"PATCH /pmem/{id}", "Pmem.rate_limiter"}},
	{FeatureSerialRateLimiter, v(1, 16, 0), Version{}, []string{"SerialDevice.rate_limiter"}},
	{FeatureVsockOverride, v(1, 16, 0), Version{}, []string{"SnapshotLoadParams.vsock_override"}},
}

// featureWindow is one row of featureTable, looked up by feature or key.
type featureWindow struct {
	feature        Feature
	since, removed Version
}

func (w featureWindow) has(ver Version) bool {
	return ver.AtLeast(w.since) && (w.removed.IsZero() || ver.Less(w.removed))
}

func (w featureWindow) refuse(key string, have Version) *NotSupportedError {
	return &NotSupportedError{Feature: string(w.feature), Field: key, Have: have, Need: w.since, Removed: w.removed}
}

var (
	byFeature = map[Feature]featureWindow{}
	byKey     = map[string]featureWindow{}
)

func init() {
	for _, row := range featureTable {
		w := featureWindow{feature: row.feature, since: row.since, removed: row.removed}
		byFeature[row.feature] = w
		for _, k := range row.keys {
			byKey[k] = w
		}
	}
}

// Features lists every release-dependent feature this package knows.
func Features() []Feature {
	out := make([]Feature, 0, len(featureTable))
	for _, row := range featureTable {
		out = append(out, row.feature)
	}
	return out
}

// Since returns the first release with f (zero for an unknown feature).
func (f Feature) Since() Version { return byFeature[f].since }

// Capabilities is what a given Firecracker release supports.
type Capabilities struct {
	Version Version
}

// CapabilitiesOf returns the capabilities of release ver, without asking any
// VMM (for example from a version recorded in saved state).
func CapabilitiesOf(ver Version) Capabilities { return Capabilities{Version: ver} }

// Supports reports whether the release has f. An unknown feature is
// reported unsupported.
func (c Capabilities) Supports(f Feature) bool {
	w, ok := byFeature[f]
	return ok && c.Version.AtLeast(minSupported) && w.has(c.Version)
}

// Check returns a *NotSupportedError when the release lacks f.
func (c Capabilities) Check(f Feature) error {
	w, ok := byFeature[f]
	if !ok {
		return &NotSupportedError{Feature: string(f), Have: c.Version}
	}
	if !c.Supports(f) {
		return w.refuse(string(f), c.Version)
	}
	return nil
}

// List returns the features the release has.
func (c Capabilities) List() []Feature {
	var out []Feature
	for _, row := range featureTable {
		if c.Supports(row.feature) {
			out = append(out, row.feature)
		}
	}
	return out
}

// checkEndpoint refuses an endpoint the release lacks.
func checkEndpoint(ver Version, method, route string) error {
	key := method + " " + route
	if w, ok := byKey[key]; ok && !w.has(ver) {
		return w.refuse(key, ver)
	}
	return nil
}

// shapeFields returns body's JSON object with every field the release does
// not know removed, refusing a field the caller set. def is the swagger
// definition name of body's type. Keys are checked in sorted order, so the
// error for a request with several unknown fields is stable.
func shapeFields(ver Version, def string, fields map[string]json.RawMessage) error {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		val := fields[k]
		key := def + "." + k
		if w, ok := byKey[key]; ok && !w.has(ver) {
			if isZeroJSON(val) {
				delete(fields, k)
				continue
			}
			return w.refuse(key, ver)
		}
		var s string
		if len(val) > 0 && val[0] == '"' && json.Unmarshal(val, &s) == nil {
			key += "=" + s
			if w, ok := byKey[key]; ok && !w.has(ver) {
				return w.refuse(key, ver)
			}
		}
	}
	return nil
}

// isZeroJSON reports whether val encodes a Go zero value or an empty
// collection: null, false, 0, "", [] or {}.
func isZeroJSON(val json.RawMessage) bool {
	t := bytes.TrimSpace(val)
	switch string(t) {
	case "null", "false", `""`, "[]", "{}":
		return true
	}
	if f := strings.Trim(string(t), "-0.eE+"); f == "" && len(t) > 0 && t[0] != '"' {
		return true
	}
	if len(t) > 1 && (t[0] == '[' || t[0] == '{') {
		inner := bytes.TrimSpace(t[1 : len(t)-1])
		return len(inner) == 0
	}
	return false
}
