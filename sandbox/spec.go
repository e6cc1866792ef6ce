package sandbox

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/kindling-vm/kindling/internal/store"
)

// Spec is what a sandbox is made of: everything `kindling create` takes as
// flags or from a config file. The zero value of a field means its default.
type Spec struct {
	// ID names the sandbox; empty for a short random one.
	ID string `toml:"name" json:"id"`
	// Kernel is the guest kernel; empty boots kindling's built-in demo guest.
	Kernel string `toml:"kernel" json:"kernel,omitempty"`
	// Demo is what the built-in demo guest does after its greeting when
	// Kernel is empty: DemoPowerOff (the default) or DemoIdle, which keeps
	// it running so that pause, snapshot and the rest can be tried.
	Demo string `toml:"demo" json:"demo,omitempty"`
	// Initrd is an optional initial ramdisk.
	Initrd string `toml:"initrd" json:"initrd,omitempty"`
	// KernelArgs are merged over kindling's defaults; a key given here wins.
	KernelArgs string `toml:"kernel_args" json:"kernel_args,omitempty"`
	// Rootfs is the root drive, if any.
	Rootfs *Disk `toml:"rootfs" json:"rootfs,omitempty"`
	// Drives are further drives, attached in order.
	Drives []Disk `toml:"drives" json:"drives,omitempty"`
	// VCPUs is the number of vCPUs (default 1).
	VCPUs int `toml:"cpus" json:"cpus,omitempty"`
	// MemoryMiB is the guest memory in MiB (default 128).
	MemoryMiB int `toml:"-" json:"memory_mib,omitempty"`
	// Memory is MemoryMiB as written in a config file ("512M", "2G", "256").
	Memory string `toml:"memory" json:"-"`
	// SMT enables simultaneous multithreading.
	SMT bool `toml:"smt" json:"smt,omitempty"`
	// Net lists the network interfaces.
	Net []Net `toml:"-" json:"net,omitempty"`
	// NetFlags is Net as written in a config file ("auto", "tap=NAME,mac=MAC").
	NetFlags []string `toml:"net" json:"-"`
	// NetNS runs the VMM inside this network namespace (a name or a path).
	// With CNI networks it is the namespace that plays the host instead:
	// the plugins run, and the published ports' rules live, there; the
	// VMM runs in the sandbox's own namespace.
	NetNS string `toml:"netns" json:"netns,omitempty"`
	// CNINetworks attaches the sandbox to these CNI networks, eth0 first
	// (--net cni:NAME); they cannot be mixed with Net's taps.
	CNINetworks []string `toml:"-" json:"cni_networks,omitempty"`
	// Ports are the published ports, HOSTPORT:GUESTPORT[/tcp|udp] (-p);
	// they need a CNI network.
	Ports []string `toml:"publish" json:"ports,omitempty"`
	// CNIConfDir is the directory of the CNI networks' conflists (else
	// KINDLING_CNI_CONF_DIR, else /etc/cni/net.d); Create fills it in.
	CNIConfDir string `toml:"cni_conf_dir" json:"cni_conf_dir,omitempty"`
	// CNIBinDirs are the CNI plugin directories (else KINDLING_CNI_PATH,
	// colon-separated, else /opt/cni/bin:/usr/lib/cni); Create fills it in.
	CNIBinDirs []string `toml:"cni_bin_dirs" json:"cni_bin_dirs,omitempty"`
	// NetSlot gives the sandbox a clone-safe network slot (--net slot):
	// its own namespace, the same guest address and MAC in every slot,
	// a unique host-side address (see docs/networking.md).
	NetSlot bool `toml:"-" json:"net_slot,omitempty"`
	// Egress is the egress policy, "deny" or "allow" (--egress); empty
	// leaves egress unwatched unless AllowEgress or KINDLING_EGRESS says
	// otherwise. It needs a slot or a CNI network.
	Egress string `toml:"egress" json:"egress,omitempty"`
	// AllowEgress are the destinations a deny policy lets through: CIDRs,
	// addresses and domain names (--allow-egress, repeatable).
	AllowEgress []string `toml:"allow_egress" json:"allow_egress,omitempty"`
	// VsockCID adds a vsock device with this guest CID (≥ 3); 0 for none.
	VsockCID uint32 `toml:"vsock" json:"vsock_cid,omitempty"`
	// Agent says the guest runs kindling-agent (as its init, or started by
	// the image's init): the sandbox gets a vsock device (VsockCID, else
	// DefaultAgentCID), init=AgentInit unless KernelArgs names an init,
	// and its agent is initialised after every start, so that Exec and the
	// file calls of Guest work. It is implied by KernelArgs whose init=
	// names a file called kindling-agent.
	Agent bool `toml:"agent" json:"agent,omitempty"`
	// Firecracker is the firecracker executable (else KINDLING_FIRECRACKER, else PATH).
	Firecracker string `toml:"firecracker" json:"firecracker,omitempty"`
	// Jailer, when set, runs Firecracker through this jailer executable.
	// As root it defaults to the jailer found (see resolveJailer).
	Jailer string `toml:"jailer" json:"jailer,omitempty"`
	// NoJailer runs Firecracker without the jailer even as root.
	NoJailer bool `toml:"no_jailer" json:"no_jailer,omitempty"`
	// CPULimit caps the VMM's CPU time, in CPUs (1.5 is one and a half),
	// through its cgroup; 0 for none. It needs the jailer.
	CPULimit float64 `toml:"cpu_limit" json:"cpu_limit,omitempty"`
	// MemoryLimit caps the memory of the VMM (guest and VMM), through
	// its cgroup: "1G", "640M", MiB when bare; "" for none. It needs the
	// jailer.
	MemoryLimit string `toml:"memory_limit" json:"memory_limit,omitempty"`
	// WaitConsole makes start return only once the console shows this text.
	WaitConsole string `toml:"wait_console" json:"wait_console,omitempty"`
	// Placeholders is the size of the drive hotplug pool.
	Placeholders int `toml:"hotplug_slots" json:"hotplug_slots,omitempty"`
	// HotplugWritable makes the hotplug slots take read-write drives; by
	// default they are read-only (Firecracker fixes a slot's access at boot).
	HotplugWritable bool `toml:"hotplug_writable" json:"hotplug_writable,omitempty"`
	// CPUTemplate is Firecracker's static CPU template (C3, T2, T2S, T2CL,
	// T2A, V1N1 or None); empty for Firecracker's default.
	CPUTemplate string `toml:"cpu_template" json:"cpu_template,omitempty"`
	// VMMLogLevel is the level of Firecracker's own log (error, warning,
	// info, debug, trace or off); empty for info.
	VMMLogLevel string `toml:"vmm_log_level" json:"vmm_log_level,omitempty"`
	// DriveRate limits each drive (the root drive and Drives): a bandwidth
	// and/or an operation rate as network.ParseRate reads them ("100MB",
	// "50MiB,1000pps": pps counts operations here).
	DriveRate string `toml:"drive_rate" json:"drive_rate,omitempty"`
	// NetRate limits each network interface, in each direction: "100Mbit",
	// "10kpps" or both ("100Mbit,10kpps").
	NetRate string `toml:"net_rate" json:"net_rate,omitempty"`
	// Balloon adds a memory balloon device inflated to this size at boot
	// ("0", "64M"), which gives memory back to the host; the guest deflates
	// it when it runs out of memory. Empty for no balloon.
	Balloon string `toml:"balloon" json:"balloon,omitempty"`
	// Entropy adds a virtio-rng device, a source of randomness for the
	// guest.
	Entropy bool `toml:"entropy" json:"entropy,omitempty"`
	// Metadata is a JSON object the guest reads from Firecracker's
	// metadata service (MMDS, version 2, at 169.254.169.254) through its
	// network interfaces, given inline or as the path of a file; Create
	// reads the file, and the sandbox keeps the JSON.
	Metadata string `toml:"metadata" json:"metadata,omitempty"`
	// Labels are the user's key=value pairs on the sandbox, for finding it
	// again (ListOptions.Labels); kindling gives them no meaning. Keys are
	// 1–63 of [A-Za-z0-9_.-/] starting with a letter or digit; values at
	// most 255 bytes without newlines.
	Labels map[string]string `toml:"labels" json:"labels,omitempty"`
}

// ParseLabel parses "key=value" (a --label flag).
func ParseLabel(s string) (key, value string, err error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q: no '=' (give key=value)", s)
	}
	if err := ValidateLabel(key, value); err != nil {
		return "", "", err
	}
	return key, value, nil
}

// ValidateLabel checks a label's key and value; the error matches
// ErrInvalidSpec.
func ValidateLabel(key, value string) error {
	bad := key == "" || len(key) > 63 || !isAlnum(rune(key[0]))
	for _, r := range key {
		if !isAlnum(r) && !strings.ContainsRune("_.-/", r) {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%w: label key %q: must be 1-63 of letters, digits and _.-/ starting with a letter or digit", ErrInvalidSpec, key)
	}
	if len(value) > 255 || strings.ContainsAny(value, "\n\r\x00") {
		return fmt.Errorf("%w: label %q: value must be at most 255 bytes on one line", ErrInvalidSpec, key)
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// Demo guest behaviours (Spec.Demo).
const (
	DemoPowerOff = "poweroff"
	DemoIdle     = "idle"
)

// Disk is a drive backed by a host file.
type Disk struct {
	Path     string `toml:"path" json:"path"`
	ReadOnly bool   `toml:"read_only" json:"read_only,omitempty"`
}

// Net is one network interface: an existing tap given by name, or (Auto) a
// tap kindling creates for the sandbox and deletes when it is removed.
type Net struct {
	// CNI names a CNI network; parsed flags carry it, Spec.CNINetworks
	// keeps it (SplitNet).
	CNI string `json:"-"`
	// Slot asks for a clone-safe slot (--net slot); Spec.NetSlot keeps it.
	Slot bool   `json:"-"`
	Auto bool   `json:"auto,omitempty"`
	Tap  string `json:"tap,omitempty"`
	MAC  string `json:"mac,omitempty"`
}

// ParseMemory reads a memory size: a plain number of MiB ("512") or a number
// with a unit K, M, G or T (optionally followed by "iB" or "B"), in binary units.
// The result is in MiB and must be a whole, positive number of MiB.
func ParseMemory(s string) (int, error) {
	orig := s
	s = strings.TrimSpace(s)
	bad := func(why string) (int, error) {
		return 0, fmt.Errorf("memory %q: %s (give MiB like 512, or a size like 512M or 2G)", orig, why)
	}
	if s == "" {
		return bad("empty")
	}
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	num, unit := s[:i], strings.ToUpper(strings.TrimSpace(s[i:]))
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return bad("not a whole number")
	}
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	var kib uint64
	switch unit {
	case "", "M":
		kib = 1 << 10
	case "K":
		if n%1024 != 0 {
			return bad("not a whole number of MiB")
		}
		n, kib = n/1024, 1<<10
	case "G":
		kib = 1 << 20
	case "T":
		kib = 1 << 30
	default:
		return bad("unknown unit " + strconv.Quote(s[i:]))
	}
	if n == 0 {
		return bad("must be more than zero")
	}
	mib := n * (kib >> 10)
	if mib/(kib>>10) != n || mib > math.MaxInt32 {
		return bad("too large")
	}
	return int(mib), nil
}

// ParseDisk reads PATH[:ro|:rw]. Drives are read-write unless ":ro" is given.
func ParseDisk(s string) (Disk, error) {
	d := Disk{Path: s}
	if p, ok := strings.CutSuffix(s, ":ro"); ok {
		d = Disk{Path: p, ReadOnly: true}
	} else if p, ok := strings.CutSuffix(s, ":rw"); ok {
		d = Disk{Path: p}
	}
	if d.Path == "" {
		return Disk{}, fmt.Errorf("drive %q: no path (give PATH, PATH:ro or PATH:rw)", s)
	}
	// "disk.img:rx" is a mistyped access mode far more often than a file
	// whose name ends so: name the suffix instead of "no such file".
	if i := strings.LastIndexByte(d.Path, ':'); i >= 0 && d.Path == s {
		if suf := d.Path[i+1:]; suf != "" && len(suf) <= 3 && !strings.ContainsRune(suf, '/') {
			if _, err := os.Stat(d.Path); err != nil {
				return Disk{}, fmt.Errorf("drive %q: unknown access mode %q (give PATH:ro or PATH:rw)", s, ":"+suf)
			}
		}
	}
	return d, nil
}

// ParseNet reads "auto", "auto,mac=MAC", "tap=NAME[,mac=MAC]" or
// "cni:NETWORK" (Net.CNI).
func ParseNet(s string) (Net, error) {
	var n Net
	bad := func(why string) (Net, error) {
		return Net{}, fmt.Errorf("net %q: %s (give auto, slot, tap=NAME[,mac=MAC] or cni:NETWORK)", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if name, ok := strings.CutPrefix(s, "cni:"); ok {
		if name == "" || strings.ContainsAny(name, ",=/ ") {
			return bad("no network name after cni:")
		}
		return Net{CNI: name}, nil
	}
	if s == "slot" {
		return Net{Slot: true}, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, hasValue := strings.Cut(part, "=")
		switch {
		case k == "auto" && !hasValue:
			n.Auto = true
		case k == "tap" && hasValue && v != "":
			n.Tap = v
		case k == "mac" && hasValue && v != "":
			n.MAC = v
		default:
			return bad("unknown part " + strconv.Quote(part))
		}
	}
	if n.Auto == (n.Tap != "") {
		return bad("say either auto or tap=NAME")
	}
	return n, nil
}

// LoadSpecFile reads a sandbox spec from a TOML file. Unknown keys are errors,
// so a misspelt setting is never silently ignored.
func LoadSpecFile(path string) (Spec, error) {
	data, err := store.ReadFile(path, store.MaxConfigSize)
	if err != nil {
		return Spec{}, fmt.Errorf("config file: %w", err)
	}
	return parseSpec(path, data)
}

func parseSpec(name string, data []byte) (Spec, error) {
	var s Spec
	md, err := toml.Decode(string(data), &s)
	if err != nil {
		return Spec{}, fmt.Errorf("config file %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Spec{}, fmt.Errorf("config file %s: unknown setting %s", name, strings.Join(keys, ", "))
	}
	// A value given in the file follows the rule of its flag: zero is not
	// "the default" there, as it is not on the command line.
	if md.IsDefined("cpus") && s.VCPUs < 1 {
		return Spec{}, fmt.Errorf("config file %s: cpus = %d: give 1 or more, or leave the setting out for 1", name, s.VCPUs)
	}
	if md.IsDefined("hotplug_slots") && s.Placeholders < 0 {
		return Spec{}, fmt.Errorf("config file %s: hotplug_slots = %d: give 0 or more", name, s.Placeholders)
	}
	if md.IsDefined("name") && s.ID == "" {
		return Spec{}, fmt.Errorf("config file %s: name is empty: give a name, or leave the setting out for a random one", name)
	}
	if s.Memory != "" {
		if s.MemoryMiB, err = ParseMemory(s.Memory); err != nil {
			return Spec{}, fmt.Errorf("config file %s: %w", name, err)
		}
	}
	var errs []error
	for _, f := range s.NetFlags {
		n, err := ParseNet(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Net = append(s.Net, n)
	}
	s.SplitNet()
	if err := errors.Join(errs...); err != nil {
		return Spec{}, fmt.Errorf("config file %s: %w", name, err)
	}
	return s, nil
}
