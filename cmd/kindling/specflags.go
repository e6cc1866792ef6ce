package main

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/sandbox"
)

// specFlags are the flags that describe a sandbox, shared by run and create.
type specFlags struct {
	name        string
	kernel      string
	initrd      string
	kernelArgs  string
	rootfs      diskValue
	drives      diskListValue
	cpus        intValue
	memory      memoryValue
	smt         bool
	nets        netListValue
	netns       string
	vsock       intValue
	hotplug     intValue
	hotplugRW   bool
	firecracker string
	jailer      string
	noJailer    bool
	cpuLimit    cpuLimitValue
	memoryLimit string
	config      string
	waitConsole string
	demo        string
	labels      labelsValue
	agent       bool
	// Devices and tuning Firecracker has (checked by the runtime, with
	// the same rules as the config file's keys).
	cpuTemplate string
	vmmLogLevel string
	driveRate   string
	netRate     string
	balloon     string
	entropy     bool
	metadata    string
	// CNI networks' published ports and where their conflists and
	// plugins are.
	publish    []string
	cniConfDir string
	cniBinDir  string
	// Egress policy of a slot or CNI sandbox.
	egress      string
	allowEgress []string
}

func (f *specFlags) register(fs *pflag.FlagSet) {
	f.cpus = intValue{min: 1, what: "vCPU count"}
	f.vsock = intValue{min: 3, max: 1<<32 - 1, what: "vsock CID"}
	f.hotplug = intValue{min: 0, what: "slot count"}
	fs.StringVar(&f.name, "name", "", "sandbox `ID` (default: 12 random hex digits)")
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel `PATH` (default: the built-in demo guest)")
	fs.StringVar(&f.demo, "demo", "", "what the built-in demo guest does after its greeting: `MODE` is poweroff (default) or idle (keeps running)")
	fs.StringVar(&f.initrd, "initrd", "", "initial ramdisk `PATH`")
	fs.StringVar(&f.kernelArgs, "kernel-args", "", "kernel command line `ARGS`, merged over kindling's defaults")
	fs.Var(&f.rootfs, "rootfs", "root drive `PATH[:ro|:rw]` (read-write unless :ro)")
	fs.Var(&f.drives, "drive", "extra drive `PATH[:ro|:rw]` (repeatable)")
	fs.Var(&f.cpus, "cpus", "number of vCPUs `N` (default 1)")
	fs.Var(&f.memory, "memory", "guest memory `SIZE`: MiB (512) or with a unit (512M, 2G) (default 128)")
	fs.BoolVar(&f.smt, "smt", false, "enable simultaneous multithreading")
	fs.Var(&f.nets, "net", "network interface `auto|slot|tap=NAME[,mac=MAC]|cni:NETWORK` (repeatable; auto creates a tap, slot gives a clone-safe slot, cni: attaches to a CNI network)")
	fs.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a guest port on the host, `HOSTPORT:GUESTPORT[/tcp|udp]` (repeatable; needs --net slot or --net cni:NETWORK)")
	fs.StringVar(&f.egress, "egress", "", "egress `POLICY` of a slot or CNI sandbox: deny or allow (default $"+sandbox.EnvEgress+"; deny when --allow-egress is given)")
	fs.StringArrayVar(&f.allowEgress, "allow-egress", nil, "let the sandbox reach `CIDR|ADDRESS|DOMAIN` under a deny policy (repeatable; a domain, with its subdomains, needs --net slot)")
	fs.StringVar(&f.cniConfDir, "cni-conf-dir", "", "`DIR` of the CNI networks' conflists (default $"+sandbox.EnvCNIConfDir+", else "+sandbox.DefaultCNIConfDir+")")
	fs.StringVar(&f.cniBinDir, "cni-bin-dir", "", "CNI plugin directories, colon-separated `DIRS` (default $"+sandbox.EnvCNIPath+", else "+strings.Join(sandbox.DefaultCNIBinDirs, ":")+")")
	fs.StringVar(&f.netns, "netns", "", "run the VMM in network namespace `NAME|PATH`")
	fs.Var(&f.vsock, "vsock", "add a vsock device with guest `CID` (3 or more)")
	fs.BoolVar(&f.agent, "agent", false, "the root filesystem runs kindling-agent (as init="+sandbox.AgentInit+" unless --kernel-args names an init): 'kindling exec' and 'kindling cp' work")
	fs.Var(&f.hotplug, "hotplug-slots", "`N` empty drive slots for 'kindling drive add'")
	fs.BoolVar(&f.hotplugRW, "hotplug-writable", false, "make the hotplug slots take read-write drives (default: read-only)")
	fs.StringVar(&f.firecracker, "firecracker", "", "firecracker executable `PATH` (default $"+sandbox.EnvFirecracker+", else PATH)")
	fs.StringVar(&f.jailer, "jailer", "", "run Firecracker through this jailer `PATH` (as root the default is $"+install.EnvJailer+", else PATH, else the installed one)")
	fs.BoolVar(&f.noJailer, "no-jailer", false, "run Firecracker without the jailer, even as root (also $"+sandbox.EnvNoJailer+"=1)")
	fs.Var(&f.cpuLimit, "cpu-limit", "cap the VMM's CPU time at `CPUS` (1.5 is one and a half) through its cgroup; needs the jailer")
	fs.StringVar(&f.memoryLimit, "memory-limit", "", "cap the VMM's memory (guest and VMM) at `SIZE` (640M, 2G) through its cgroup; needs the jailer")
	fs.StringVar(&f.config, "config", "", "read the sandbox from a TOML `FILE`; flags given override it")
	fs.StringVar(&f.waitConsole, "wait-console", "", "start returns only once the console shows `TEXT`")
	addLabelFlag(fs, &f.labels)
	fs.StringVar(&f.cpuTemplate, "cpu-template", "", "Firecracker's static CPU `TEMPLATE`: C3, T2, T2S, T2CL, T2A, V1N1 or None")
	fs.StringVar(&f.vmmLogLevel, "vmm-log-level", "", "`LEVEL` of Firecracker's own log ('kindling logs --vmm'): error, warning, info (default), debug, trace or off")
	fs.StringVar(&f.driveRate, "drive-rate", "", "limit each drive to `RATE`: a bandwidth (100MB, 50MiB) and/or operations (1000pps), comma-separated")
	fs.StringVar(&f.netRate, "net-rate", "", "limit each network interface, each way, to `RATE`: 100Mbit, 12.5MB, 10kpps or 100Mbit,10kpps")
	fs.StringVar(&f.balloon, "balloon", "", "add a memory balloon inflated to `SIZE` at boot (0, 64M); the guest deflates it when short of memory")
	fs.BoolVar(&f.entropy, "entropy", false, "add a virtio-rng entropy device")
	fs.StringVar(&f.metadata, "metadata", "", "serve this JSON object to the guest from Firecracker's metadata service (MMDS v2, via --net): a `FILE` or the JSON itself")
}

// addLabelFlag registers the repeatable --label flag.
func addLabelFlag(fs *pflag.FlagSet, v *labelsValue) {
	fs.Var(v, "label", "set label `KEY=VALUE` on the sandbox (repeatable)")
}

// spec builds the sandbox spec: the --config file, if any, with every flag
// given on the command line overriding it.
func (f *specFlags) spec(cmd *cobra.Command) (sandbox.Spec, error) {
	var s sandbox.Spec
	if f.config != "" {
		var err error
		if s, err = sandbox.LoadSpecFile(f.config); err != nil {
			return sandbox.Spec{}, fmt.Errorf("%w: fix the file or leave out --config", err)
		}
		relativeTo(filepath.Dir(f.config), &s)
	}
	changed := cmd.Flags().Changed
	set := func(flag string, dst *string, v string) {
		if changed(flag) {
			*dst = v
		}
	}
	set("name", &s.ID, f.name)
	set("kernel", &s.Kernel, f.kernel)
	set("initrd", &s.Initrd, f.initrd)
	set("kernel-args", &s.KernelArgs, f.kernelArgs)
	set("netns", &s.NetNS, f.netns)
	set("firecracker", &s.Firecracker, f.firecracker)
	set("jailer", &s.Jailer, f.jailer)
	set("memory-limit", &s.MemoryLimit, f.memoryLimit)
	if changed("no-jailer") {
		s.NoJailer = f.noJailer
	}
	if changed("cpu-limit") {
		s.CPULimit = f.cpuLimit.n
	}
	set("wait-console", &s.WaitConsole, f.waitConsole)
	set("demo", &s.Demo, f.demo)
	set("cpu-template", &s.CPUTemplate, f.cpuTemplate)
	set("vmm-log-level", &s.VMMLogLevel, f.vmmLogLevel)
	set("drive-rate", &s.DriveRate, f.driveRate)
	set("net-rate", &s.NetRate, f.netRate)
	set("balloon", &s.Balloon, f.balloon)
	set("metadata", &s.Metadata, f.metadata)
	if changed("entropy") {
		s.Entropy = f.entropy
	}
	if changed("rootfs") {
		d := f.rootfs.d
		s.Rootfs = &d
	}
	if changed("drive") {
		s.Drives = f.drives.ds
	}
	if changed("cpus") {
		s.VCPUs = f.cpus.n
	}
	if changed("memory") {
		s.MemoryMiB = f.memory.mib
	}
	if changed("smt") {
		s.SMT = f.smt
	}
	if changed("net") {
		s.Net, s.CNINetworks = f.nets.ns, nil
		s.SplitNet()
	}
	if changed("publish") {
		s.Ports = f.publish
	}
	set("egress", &s.Egress, f.egress)
	if changed("allow-egress") {
		s.AllowEgress = f.allowEgress
	}
	set("cni-conf-dir", &s.CNIConfDir, f.cniConfDir)
	if changed("cni-bin-dir") {
		s.CNIBinDirs = filepath.SplitList(f.cniBinDir)
	}
	if changed("vsock") {
		s.VsockCID = uint32(f.vsock.n)
	}
	if changed("agent") {
		s.Agent = f.agent
	}
	if changed("hotplug-slots") {
		s.Placeholders = f.hotplug.n
	}
	if changed("hotplug-writable") {
		s.HotplugWritable = f.hotplugRW
	}
	if changed("label") {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		for k, v := range f.labels.m {
			s.Labels[k] = v
		}
	}
	if changed("name") && f.name == "" {
		return sandbox.Spec{}, usageErrorf(cmd.CommandPath(), "--name is empty: give an ID, or leave out --name for a random one")
	}
	if changed("kernel") && s.Kernel == "" {
		return sandbox.Spec{}, usageErrorf(cmd.CommandPath(), "--kernel is empty: give a kernel path, or leave out --kernel for the demo guest")
	}
	return s, nil
}

// relativeTo makes the relative host paths of a spec read from a config
// file relative to the file's directory, dir.
func relativeTo(dir string, s *sandbox.Spec) {
	fix := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, p := range []*string{&s.Kernel, &s.Initrd, &s.Firecracker, &s.Jailer} {
		fix(p)
	}
	if s.Rootfs != nil {
		fix(&s.Rootfs.Path)
	}
	for i := range s.Drives {
		fix(&s.Drives[i].Path)
	}
	if strings.ContainsRune(s.NetNS, '/') {
		fix(&s.NetNS)
	}
	if m := strings.TrimSpace(s.Metadata); m != "" && !strings.HasPrefix(m, "{") {
		fix(&s.Metadata) // a file, not the JSON itself
	}
}

// intValue is an integer flag with bounds (max 0: none).
type intValue struct {
	n        int
	min, max int
	what     string
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%s %q is not a whole number", v.what, s)
	}
	if n < v.min {
		return fmt.Errorf("%s must be at least %d", v.what, v.min)
	}
	if v.max > 0 && n > v.max {
		return fmt.Errorf("%s must be at most %d", v.what, v.max)
	}
	v.n = n
	return nil
}

func (v *intValue) String() string {
	if v.n == 0 {
		return ""
	}
	return strconv.Itoa(v.n)
}

func (v *intValue) Type() string { return "int" }

// cpuLimitValue is the --cpu-limit flag: a number of CPUs, fractions
// allowed. Its range is checked with the rest of the spec.
type cpuLimitValue struct{ n float64 }

func (v *cpuLimitValue) Set(s string) error {
	n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return fmt.Errorf("cpu limit %q is not a number of CPUs: give one like 0.5 or 1.5", s)
	}
	v.n = n
	return nil
}

func (v *cpuLimitValue) String() string {
	if v.n == 0 {
		return ""
	}
	return strconv.FormatFloat(v.n, 'f', -1, 64)
}

func (v *cpuLimitValue) Type() string { return "float" }

// memoryValue is a memory size flag read by sandbox.ParseMemory.
type memoryValue struct{ mib int }

func (v *memoryValue) Set(s string) (err error) {
	v.mib, err = sandbox.ParseMemory(s)
	return err
}

func (v *memoryValue) String() string {
	if v.mib == 0 {
		return ""
	}
	return strconv.Itoa(v.mib)
}

func (v *memoryValue) Type() string { return "size" }

// diskValue is a PATH[:ro|:rw] flag.
type diskValue struct{ d sandbox.Disk }

func (v *diskValue) Set(s string) (err error) {
	v.d, err = sandbox.ParseDisk(s)
	return err
}

func (v *diskValue) String() string { return diskString(v.d) }
func (v *diskValue) Type() string   { return "path" }

func diskString(d sandbox.Disk) string {
	if d.Path == "" {
		return ""
	}
	if d.ReadOnly {
		return d.Path + ":ro"
	}
	return d.Path
}

// diskListValue is a repeatable PATH[:ro|:rw] flag.
type diskListValue struct{ ds []sandbox.Disk }

func (v *diskListValue) Set(s string) error {
	d, err := sandbox.ParseDisk(s)
	if err != nil {
		return err
	}
	v.ds = append(v.ds, d)
	return nil
}

func (v *diskListValue) String() string {
	parts := make([]string, len(v.ds))
	for i, d := range v.ds {
		parts[i] = diskString(d)
	}
	return strings.Join(parts, ",")
}

func (v *diskListValue) Type() string { return "path" }

// labelsValue is the repeatable --label KEY=VALUE flag (and ps --filter
// label=KEY=VALUE); a key given twice keeps the last value.
type labelsValue struct{ m map[string]string }

func (v *labelsValue) Set(s string) error {
	k, val, err := sandbox.ParseLabel(s)
	if err != nil {
		return err
	}
	if v.m == nil {
		v.m = map[string]string{}
	}
	v.m[k] = val
	return nil
}

func (v *labelsValue) String() string {
	keys := make([]string, 0, len(v.m))
	for k := range v.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + v.m[k]
	}
	return strings.Join(parts, ",")
}

func (v *labelsValue) Type() string { return "KEY=VALUE" }

// netListValue is the repeatable --net flag.
type netListValue struct{ ns []sandbox.Net }

func (v *netListValue) Set(s string) error {
	n, err := sandbox.ParseNet(s)
	if err != nil {
		return err
	}
	v.ns = append(v.ns, n)
	return nil
}

func (v *netListValue) String() string {
	parts := make([]string, len(v.ns))
	for i, n := range v.ns {
		parts[i] = netString(n)
	}
	return strings.Join(parts, " ")
}

func (v *netListValue) Type() string { return "net" }

func netString(n sandbox.Net) string {
	if n.CNI != "" {
		return "cni:" + n.CNI
	}
	s := "tap=" + n.Tap
	if n.Auto {
		s = "auto"
	}
	if n.MAC != "" {
		s += ",mac=" + n.MAC
	}
	return s
}
