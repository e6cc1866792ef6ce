package vmm

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Defaults applied by withDefaults and limits enforced by Validate.
const (
	defaultVCPUs         = 1
	defaultMemoryMiB     = 128
	defaultLogLevel      = "Info"
	defaultSocketName    = "firecracker.sock"
	defaultLogName       = "firecracker.log"
	defaultChrootBase    = "/srv/jailer"
	defaultCgroupVersion = 2

	maxVCPUs     = 32      // Firecracker's machine-config maximum
	maxMemoryMiB = 1 << 20 // 1 TiB: a sanity bound, not Firecracker's
	maxPool      = 32      // largest placeholder pool
	// maxDevices is how many virtio devices (drives, placeholders, network,
	// vsock, entropy, balloon and virtio-mem together) every supported
	// Firecracker can give an interrupt on x86_64: 19 from 1.0 to 1.15,
	// 17 from 1.16, whose VMClock device takes one.
	maxDevices = 17
	// maxSocketPath is the longest Unix socket path: sun_path holds 108
	// bytes including the terminating NUL.
	maxSocketPath = 107
	// maxStatsInterval is the largest balloon statistics period Firecracker
	// takes (a 16-bit count of seconds).
	maxStatsInterval = 65535 * time.Second

	// Firecracker's virtio-mem defaults and minimums, in MiB.
	defaultHotplugBlockMiB = 2
	defaultHotplugSlotMiB  = 128
	minHotplugSlotMiB      = 128
)

// The ID rules, as matchers. They are plain functions rather than package
// regexps: compiling regexps at init costs every kindling process (the CLI
// and each sandbox's monitor) most of a millisecond at start.
var (
	vmIDRe     = charsetMatcher{min: 1, max: 64, ok: func(c byte) bool { return isAlnum(c) || c == '-' }} // ^[A-Za-z0-9-]{1,64}$
	deviceIDRe = charsetMatcher{min: 1, max: 64, ok: func(c byte) bool { return isAlnum(c) || c == '_' }} // ^[A-Za-z0-9_]{1,64}$
	partUUIDRe = charsetMatcher{min: 1, max: 36, ok: func(c byte) bool { return isHex(c) || c == '-' }}   // ^[0-9A-Fa-f-]{1,36}$
	poolIDRe   = prefixMatcher{prefix: "pool", rest: charsetMatcher{min: 1, max: 1 << 30, ok: isDigit}}   // ^pool[0-9]+$

	logLevels    = []string{"Error", "Warning", "Info", "Debug", "Trace", "Off"}
	cpuTemplates = []string{"C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"}
)

// withDefaults returns a copy of c with every unset setting that has a
// default filled in, and every path made absolute. It never touches the disk
// and never fails; c and the slices and devices it points to are unchanged.
//
// Defaults: VCPUs 1, MemoryMiB 128, LogLevel "Info", SocketPath
// RunDir/firecracker.sock, LogPath RunDir/firecracker.log, a random ID, and
// for the jailer ChrootBase /srv/jailer and cgroup version 2.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = randomID()
	}
	if c.VCPUs == 0 {
		c.VCPUs = defaultVCPUs
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = defaultMemoryMiB
	}
	if c.LogLevel == "" {
		c.LogLevel = defaultLogLevel
	}
	abs(&c.Firecracker)
	abs(&c.RunDir)
	abs(&c.SocketPath)
	abs(&c.Kernel)
	abs(&c.Initrd)
	abs(&c.LogPath)
	abs(&c.MetricsPath)
	abs(&c.ConsolePath)
	if c.RunDir != "" {
		if c.SocketPath == "" {
			c.SocketPath = filepath.Join(c.RunDir, defaultSocketName)
		}
		if c.LogPath == "" {
			c.LogPath = filepath.Join(c.RunDir, defaultLogName)
		}
	}
	if c.Drives != nil {
		c.Drives = append([]Drive(nil), c.Drives...)
		for i := range c.Drives {
			abs(&c.Drives[i].Path)
		}
	}
	if c.Vsock != nil {
		v := *c.Vsock
		abs(&v.Path)
		c.Vsock = &v
	}
	abs(&c.NetNS)
	if c.Jailer != nil {
		j := *c.Jailer
		abs(&j.Path)
		abs(&j.NetNS)
		if j.ChrootBase == "" {
			j.ChrootBase = defaultChrootBase
		}
		if j.CgroupVersion == 0 {
			j.CgroupVersion = HostCgroupVersion()
		}
		c.Jailer = &j
	}
	return c
}

// abs makes *p absolute when it is set and the working directory is known.
func abs(p *string) {
	if *p == "" || filepath.IsAbs(*p) {
		return
	}
	if a, err := filepath.Abs(*p); err == nil {
		*p = a
	}
}

// randomID returns a short random VMM ID such as "vm-3f9a1c0e".
func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "vm-" + hex.EncodeToString(b[:])
}

// Validate checks c before anything is spawned and returns every problem it
// finds, joined with errors.Join; each is a *ConfigError matching
// ErrInvalidConfig, so
//
//	var ce *ConfigError
//	errors.As(err, &ce)
//
// finds the first. It reads nothing from the disk but file metadata (stat)
// and the first bytes of the kernel, to check its format.
// Unset settings that have a default are accepted: Validate checks c as
// withDefaults would complete it, so it may be called before or after
// defaults are applied.
//
// ConfigError.Field names the setting in snake case, with an index for
// list entries: "kernel", "vcpus", "drives[1].path", "jailer.uid"; "devices"
// is the total count of virtio devices.
func (c *Config) Validate() error {
	d := c.withDefaults()
	v := &validator{}
	v.config(&d)
	return errors.Join(v.errs...)
}

// validator collects the problems of one Config.
type validator struct {
	errs []error
}

// add records a problem with field. value is shown as given.
func (v *validator) add(field, value, problem, fix string) {
	v.errs = append(v.errs, &ConfigError{Field: field, Value: value, Problem: problem, Fix: fix})
}

func (v *validator) config(c *Config) {
	v.executable("firecracker", c.Firecracker, "give the path of the firecracker executable")
	v.regularFile("kernel", c.Kernel, true, "give the path of an uncompressed kernel image")
	v.kernelFormat(c.Kernel)
	v.regularFile("initrd", c.Initrd, false, "give the path of an initial ramdisk, or leave it empty")
	if !vmIDRe.MatchString(c.ID) {
		v.add("id", strconv.Quote(c.ID), "not 1–64 letters, digits or '-'", "")
	}
	v.runDir(c)
	if c.Jailer == nil {
		v.socketPath("socket_path", c.SocketPath, "choose a shorter RunDir or SocketPath")
	}
	if c.Jailer == nil { // under the jailer the log and metrics are in the jail
		v.outputFile("log_path", c.LogPath, c.RunDir)
		v.outputFile("metrics_path", c.MetricsPath, c.RunDir)
	}
	v.outputFile("console_path", c.ConsolePath, c.RunDir)
	v.machine(c)
	v.drives(c)
	v.network(c.NetworkInterfaces)
	v.mmds(c)
	v.vsock(c)
	if c.Entropy != nil {
		v.rateLimiter("entropy.rate_limiter", c.Entropy.RateLimiter)
	}
	v.balloon(c)
	v.memoryHotplug(c.MemoryHotplug)
	v.devices(c)
	if !oneOf(c.LogLevel, logLevels, true) {
		v.add("log_level", strconv.Quote(c.LogLevel), "unknown level", "use one of "+strings.Join(logLevels, ", "))
	}
	if c.Jailer != nil {
		v.jailer(c)
		if c.NetNS != "" {
			v.add("netns", strconv.Quote(c.NetNS), "is for direct runs", "under the jailer set jailer.netns instead")
		}
	} else if c.NetNS != "" {
		if fi, err := os.Stat(c.NetNS); err != nil || fi.IsDir() {
			v.add("netns", strconv.Quote(c.NetNS), "not a network namespace file", "give a path such as /run/netns/NAME (create one with 'ip netns add NAME')")
		}
	}
}

func (v *validator) runDir(c *Config) {
	if c.RunDir == "" {
		v.add("run_dir", "", "required", "give a directory for the API socket and Firecracker's log")
		return
	}
	fi, err := os.Stat(c.RunDir)
	if err == nil {
		if !fi.IsDir() {
			v.add("run_dir", strconv.Quote(c.RunDir), "not a directory", "")
		}
		return
	}
	if !errors.Is(err, fs.ErrNotExist) {
		v.add("run_dir", strconv.Quote(c.RunDir), errdefs.PathProblem(err), "")
		return
	}
	parent := filepath.Dir(c.RunDir)
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		v.add("run_dir", strconv.Quote(c.RunDir), "its parent "+strconv.Quote(parent)+" is not a directory",
			"create the parent directory first")
	}
}

func (v *validator) machine(c *Config) {
	if c.VCPUs < 1 || c.VCPUs > maxVCPUs {
		v.add("vcpus", strconv.Itoa(c.VCPUs), fmt.Sprintf("out of range 1–%d", maxVCPUs), "")
	} else if c.SMT && c.VCPUs > 1 && c.VCPUs%2 != 0 {
		v.add("vcpus", strconv.Itoa(c.VCPUs), "odd count with SMT enabled",
			"Firecracker takes 1 or an even number of vCPUs with SMT")
	}
	if c.MemoryMiB < 1 || c.MemoryMiB > maxMemoryMiB {
		v.add("memory_mib", strconv.Itoa(c.MemoryMiB), fmt.Sprintf("out of range 1–%d", maxMemoryMiB), "")
	}
	if c.CPUTemplate != "" && !oneOf(c.CPUTemplate, cpuTemplates, false) {
		v.add("cpu_template", strconv.Quote(c.CPUTemplate), "unknown CPU template",
			"use one of "+strings.Join(cpuTemplates, ", ")+", or leave it empty")
	}
}

func (v *validator) drives(c *Config) {
	if c.Placeholders < 0 || c.Placeholders > maxPool {
		v.add("placeholders", strconv.Itoa(c.Placeholders), fmt.Sprintf("out of range 0–%d", maxPool), "")
	}
	ids := map[string]int{}
	root := -1
	for i, d := range c.Drives {
		f := fmt.Sprintf("drives[%d]", i)
		switch {
		case !deviceIDRe.MatchString(d.ID):
			v.add(f+".id", strconv.Quote(d.ID), "not 1–64 letters, digits or '_'", "")
		case poolIDRe.MatchString(d.ID):
			v.add(f+".id", strconv.Quote(d.ID), "reserved for the placeholder pool", "choose another ID")
		default:
			if j, dup := ids[d.ID]; dup {
				v.add(f+".id", strconv.Quote(d.ID), fmt.Sprintf("also used by drives[%d]", j), "give each drive its own ID")
			} else {
				ids[d.ID] = i
			}
		}
		v.regularFile(f+".path", d.Path, true, "give the path of the drive's backing file")
		if d.Root {
			if root >= 0 {
				v.add(f+".root", "true", fmt.Sprintf("drives[%d] is already the root drive", root), "mark one drive as Root")
			} else {
				root = i
			}
		}
		if d.PartUUID != "" {
			switch {
			case !d.Root:
				v.add(f+".part_uuid", strconv.Quote(d.PartUUID), "set on a drive that is not the root drive", "")
			case !partUUIDRe.MatchString(d.PartUUID):
				v.add(f+".part_uuid", strconv.Quote(d.PartUUID), "not a partition UUID", "use hex digits and '-'")
			}
		}
		switch d.CacheType {
		case "", CacheUnsafe, CacheWriteback:
		default:
			v.add(f+".cache_type", strconv.Quote(string(d.CacheType)), "unknown cache type", "use Unsafe or Writeback")
		}
		switch d.IOEngine {
		case "", IOEngineSync, IOEngineAsync:
		default:
			v.add(f+".io_engine", strconv.Quote(string(d.IOEngine)), "unknown I/O engine", "use Sync or Async")
		}
		v.rateLimiter(f+".rate_limiter", d.RateLimiter)
	}
}

func (v *validator) network(ifaces []NetworkInterface) {
	ids := map[string]int{}
	taps := map[string]int{}
	for i, n := range ifaces {
		f := fmt.Sprintf("network_interfaces[%d]", i)
		if !deviceIDRe.MatchString(n.ID) {
			v.add(f+".id", strconv.Quote(n.ID), "not 1–64 letters, digits or '_'", "")
		} else if j, dup := ids[n.ID]; dup {
			v.add(f+".id", strconv.Quote(n.ID), fmt.Sprintf("also used by network_interfaces[%d]", j), "give each interface its own ID")
		} else {
			ids[n.ID] = i
		}
		if p := ifnameProblem(n.TapName); p != "" {
			v.add(f+".tap_name", strconv.Quote(n.TapName), p, "")
		} else if j, dup := taps[n.TapName]; dup {
			v.add(f+".tap_name", strconv.Quote(n.TapName), fmt.Sprintf("also used by network_interfaces[%d]", j), "give each interface its own tap")
		} else {
			taps[n.TapName] = i
		}
		if n.MAC != "" {
			if p := macProblem(n.MAC); p != "" {
				v.add(f+".mac", strconv.Quote(n.MAC), p, "give a unicast MAC such as 06:00:ac:10:00:02, or leave it empty")
			}
		}
		v.rateLimiter(f+".rx_rate_limiter", n.RxRateLimiter)
		v.rateLimiter(f+".tx_rate_limiter", n.TxRateLimiter)
	}
}

// mmds checks the metadata service: a known version, interfaces that
// exist (at least one), and a document that is a JSON object.
func (v *validator) mmds(c *Config) {
	mm := c.MMDS
	if mm == nil {
		return
	}
	if mm.Version != "" && mm.Version != string(fcapi.MMDSv1) && mm.Version != string(fcapi.MMDSv2) {
		v.add("mmds.version", strconv.Quote(mm.Version), "unknown version", "use V1 or V2, or leave it empty for V2")
	}
	if len(c.NetworkInterfaces) == 0 {
		v.add("mmds", "", "needs a network interface to be reached through", "add a network interface")
	}
	for i, id := range mm.Interfaces {
		if !slices.ContainsFunc(c.NetworkInterfaces, func(n NetworkInterface) bool { return n.ID == id }) {
			v.add(fmt.Sprintf("mmds.interfaces[%d]", i), strconv.Quote(id), "no such network interface", "")
		}
	}
	if len(mm.Data) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(mm.Data, &obj); err != nil || obj == nil {
			v.add("mmds.data", "", "not a JSON object", `give an object such as {"latest": {"meta-data": {}}}`)
		}
	}
}

// ifnameProblem says why name is not a valid Linux interface name, or "".
func ifnameProblem(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > 15:
		return fmt.Sprintf("%d bytes long, over the 15 of an interface name", len(name))
	case name == "." || name == "..":
		return "not an interface name"
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return "contains '/', ':' or white space"
	}
	return ""
}

// macProblem says why s is not a usable guest MAC address, or "".
func macProblem(s string) string {
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return "not a 6-byte MAC address"
	case hw[0]&1 != 0:
		return "a multicast address"
	case string(hw) == "\x00\x00\x00\x00\x00\x00":
		return "the all-zero address"
	}
	return ""
}

func (v *validator) vsock(c *Config) {
	if c.Vsock == nil {
		return
	}
	if c.Vsock.CID < 3 || c.Vsock.CID == ^uint32(0) {
		v.add("vsock.cid", strconv.FormatUint(uint64(c.Vsock.CID), 10), "out of range 3–4294967294",
			"0–2 belong to the hypervisor, loopback and host")
	}
	if c.Vsock.Path == "" {
		v.add("vsock.path", "", "required", "give the host-side Unix socket path")
		return
	}
	if c.Jailer == nil {
		v.socketPath("vsock.path", c.Vsock.Path, "choose a shorter vsock path")
	}
}

func (v *validator) balloon(c *Config) {
	b := c.Balloon
	if b == nil {
		return
	}
	if b.AmountMiB < 0 || b.AmountMiB > c.MemoryMiB {
		v.add("balloon.amount_mib", strconv.Itoa(b.AmountMiB), fmt.Sprintf("out of range 0–%d (the guest's memory)", c.MemoryMiB), "")
	}
	switch {
	case b.StatsInterval < 0 || b.StatsInterval > maxStatsInterval:
		v.add("balloon.stats_interval", b.StatsInterval.String(), "out of range 0–65535s", "")
	case b.StatsInterval%time.Second != 0:
		v.add("balloon.stats_interval", b.StatsInterval.String(), "not a whole number of seconds", "")
	}
}

func (v *validator) memoryHotplug(m *MemoryHotplug) {
	if m == nil {
		return
	}
	block, slot := m.BlockMiB, m.SlotMiB
	if block == 0 {
		block = defaultHotplugBlockMiB
	}
	if slot == 0 {
		slot = defaultHotplugSlotMiB
	}
	blockOK := block >= 2 && block&(block-1) == 0
	if !blockOK {
		v.add("memory_hotplug.block_mib", strconv.Itoa(m.BlockMiB), "not a power of two of at least 2", "")
	}
	slotOK := slot >= minHotplugSlotMiB && (!blockOK || slot%block == 0)
	if !slotOK {
		v.add("memory_hotplug.slot_mib", strconv.Itoa(m.SlotMiB),
			fmt.Sprintf("not a multiple of the block size (%d MiB) of at least %d", block, minHotplugSlotMiB), "")
	}
	switch {
	case m.TotalMiB <= 0:
		v.add("memory_hotplug.total_mib", strconv.Itoa(m.TotalMiB), "not positive", "")
	case m.TotalMiB > maxMemoryMiB:
		v.add("memory_hotplug.total_mib", strconv.Itoa(m.TotalMiB), fmt.Sprintf("over %d", maxMemoryMiB), "")
	case slotOK && m.TotalMiB%slot != 0:
		v.add("memory_hotplug.total_mib", strconv.Itoa(m.TotalMiB),
			fmt.Sprintf("not a multiple of the slot size (%d MiB)", slot), "")
	}
}

// devices checks the total number of virtio devices.
func (v *validator) devices(c *Config) {
	n := len(c.Drives) + len(c.NetworkInterfaces)
	if c.Placeholders > 0 {
		n += c.Placeholders
	}
	for _, present := range []bool{c.Vsock != nil, c.Entropy != nil, c.Balloon != nil, c.MemoryHotplug != nil} {
		if present {
			n++
		}
	}
	if n > maxDevices {
		v.add("devices", strconv.Itoa(n), fmt.Sprintf("over the %d virtio devices Firecracker can attach", maxDevices),
			"use fewer drives, placeholders or interfaces")
	}
}

func (v *validator) rateLimiter(field string, r *RateLimiter) {
	if r == nil {
		return
	}
	v.bucket(field+".bandwidth", r.Bandwidth)
	v.bucket(field+".ops", r.Ops)
}

func (v *validator) bucket(field string, b *TokenBucket) {
	if b == nil {
		return
	}
	if b.Size < 0 {
		v.add(field+".size", strconv.FormatInt(b.Size, 10), "negative", "")
	}
	if b.OneTimeBurst < 0 {
		v.add(field+".one_time_burst", strconv.FormatInt(b.OneTimeBurst, 10), "negative", "")
	}
	switch {
	case b.RefillTime < 0:
		v.add(field+".refill_time", b.RefillTime.String(), "negative", "")
	case b.Size > 0 && b.RefillTime < time.Millisecond:
		v.add(field+".refill_time", b.RefillTime.String(), "under 1ms for a bucket with a size",
			"give the time the bucket takes to refill")
	case b.RefillTime%time.Millisecond != 0:
		v.add(field+".refill_time", b.RefillTime.String(), "not a whole number of milliseconds", "")
	}
}

func (v *validator) jailer(c *Config) {
	j := c.Jailer
	v.executable("jailer.path", j.Path, "give the path of the jailer executable")
	if c.Firecracker != "" && !strings.Contains(filepath.Base(c.Firecracker), "firecracker") {
		v.add("firecracker", strconv.Quote(c.Firecracker), "the jailer runs only files whose name contains \"firecracker\"",
			"rename or link the executable")
	}
	if j.UID < 0 || int64(j.UID) >= 1<<32-1 {
		v.add("jailer.uid", strconv.Itoa(j.UID), "not a user ID", "")
	}
	if j.GID < 0 || int64(j.GID) >= 1<<32-1 {
		v.add("jailer.gid", strconv.Itoa(j.GID), "not a group ID", "")
	}
	if j.CgroupVersion != 1 && j.CgroupVersion != 2 {
		v.add("jailer.cgroup_version", strconv.Itoa(j.CgroupVersion), "not 1 or 2", "")
	}
	for i, kv := range j.Cgroups {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsAny(k, "/ ") {
			v.add(fmt.Sprintf("jailer.cgroups[%d]", i), strconv.Quote(kv), "not file=value", "for example cpu.max=50000 100000")
		}
	}
	if p := j.ParentCgroup; p != "" && (filepath.IsAbs(p) || filepath.Clean(p) != p || strings.HasPrefix(p, "..") || strings.ContainsAny(p, " \n")) {
		v.add("jailer.parent_cgroup", strconv.Quote(p), "not a relative cgroup path", "for example kindling")
	}
	if !filepath.IsAbs(j.ChrootBase) {
		v.add("jailer.chroot_base", strconv.Quote(j.ChrootBase), "not an absolute path", "")
		return
	}
	if j.NetNS != "" {
		if _, err := os.Stat(j.NetNS); err != nil {
			v.add("jailer.netns", strconv.Quote(j.NetNS), errdefs.PathProblem(err), "give a network namespace file such as /var/run/netns/NAME")
		}
	}
	v.sameFilesystem(c)
	if !vmIDRe.MatchString(c.ID) {
		return // the layout needs a valid ID; the ID problem is already recorded
	}
	l := newJailLayout(c)
	v.socketPath("jailer.chroot_base", l.SocketPathHost, "choose a shorter ChrootBase or ID")
	if c.Vsock != nil && c.Vsock.Path != "" {
		v.socketPath("vsock.path", l.VsockPathHost, "choose a shorter ChrootBase, ID or vsock file name")
	}
}

// sameFilesystem checks that every writable drive is on the filesystem of the
// jailer's chroot base (or of its nearest existing ancestor): stageJail must
// hard-link it, since a copy would not receive the guest's writes.
func (v *validator) sameFilesystem(c *Config) {
	base := c.Jailer.ChrootBase
	var bst syscall.Stat_t
	for syscall.Stat(base, &bst) != nil {
		if base == "/" {
			return
		}
		base = filepath.Dir(base)
	}
	for i, d := range c.Drives {
		var st syscall.Stat_t
		if d.ReadOnly || d.Path == "" || syscall.Stat(d.Path, &st) != nil {
			continue // read-only drives may be copied; stat problems are reported already
		}
		if st.Dev != bst.Dev {
			v.add(fmt.Sprintf("drives[%d].path", i), strconv.Quote(d.Path),
				"writable, and on another filesystem than the jailer's chroot base "+strconv.Quote(c.Jailer.ChrootBase),
				"a jailed VMM gets a writable drive by a hard link into its chroot: keep the drive on that filesystem, make it read-only, or run without the jailer (--no-jailer)")
		}
	}
}

// socketPath checks that the Unix socket path p fits in sun_path.
func (v *validator) socketPath(field, p, fix string) {
	if len(p) > maxSocketPath {
		v.add(field, strconv.Quote(p), fmt.Sprintf("%d bytes long, over the %d of a Unix socket path", len(p), maxSocketPath), fix)
	}
}

// outputFile checks a file that will be written: if it exists it is not a
// directory, otherwise its directory exists or is runDir (created at start).
func (v *validator) outputFile(field, p, runDir string) {
	if p == "" {
		return
	}
	fi, err := os.Stat(p)
	if err == nil {
		if fi.IsDir() {
			v.add(field, strconv.Quote(p), "a directory", "give a file path")
		}
		return
	}
	dir := filepath.Dir(p)
	if dir == filepath.Clean(runDir) {
		return // run_dir has its own check
	}
	if !errors.Is(err, fs.ErrNotExist) {
		v.add(field, strconv.Quote(p), errdefs.PathProblem(err), "")
		return
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		v.add(field, strconv.Quote(p), "its directory "+strconv.Quote(dir)+" does not exist", "create it first")
	}
}

// executable checks that p names an existing regular file with an execute bit.
func (v *validator) executable(field, p, fix string) {
	if p == "" {
		v.add(field, "", "required", fix)
		return
	}
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		v.add(field, strconv.Quote(p), errdefs.PathProblem(err), fix)
	case !fi.Mode().IsRegular():
		v.add(field, strconv.Quote(p), "not a regular file", fix)
	case fi.Mode().Perm()&0o111 == 0:
		v.add(field, strconv.Quote(p), "not executable", "chmod +x it")
	}
}

// regularFile checks that p names an existing regular file; an empty p is a
// problem only when required.
func (v *validator) regularFile(field, p string, required bool, fix string) {
	if p == "" {
		if required {
			v.add(field, "", "required", fix)
		}
		return
	}
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		v.add(field, strconv.Quote(p), errdefs.PathProblem(err), fix)
	case !fi.Mode().IsRegular():
		v.add(field, strconv.Quote(p), "not a regular file", fix)
	}
}

// oneOf reports whether s is in names, ignoring case when fold is set.
func oneOf(s string, names []string, fold bool) bool {
	for _, n := range names {
		if s == n || fold && strings.EqualFold(s, n) {
			return true
		}
	}
	return false
}

// charsetMatcher matches strings of min to max bytes, each accepted by ok.
type charsetMatcher struct {
	min, max int
	ok       func(byte) bool
}

// MatchString reports whether s matches.
func (m charsetMatcher) MatchString(s string) bool {
	if len(s) < m.min || len(s) > m.max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !m.ok(s[i]) {
			return false
		}
	}
	return true
}

// prefixMatcher matches prefix followed by a string rest matches.
type prefixMatcher struct {
	prefix string
	rest   charsetMatcher
}

// MatchString reports whether s matches.
func (m prefixMatcher) MatchString(s string) bool {
	r, ok := strings.CutPrefix(s, m.prefix)
	return ok && m.rest.MatchString(r)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isAlnum(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
