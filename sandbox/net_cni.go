package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// Where the CNI networks' conflists and plugins are, unless the spec says.
const (
	// EnvCNIConfDir names the environment variable of the conflist
	// directory.
	EnvCNIConfDir = "KINDLING_CNI_CONF_DIR"
	// EnvCNIPath names the environment variable of the plugin
	// directories, colon-separated.
	EnvCNIPath = "KINDLING_CNI_PATH"
	// DefaultCNIConfDir is the conflist directory by default.
	DefaultCNIConfDir = network.DefaultCNIConfDir
)

// DefaultCNIBinDirs are the plugin directories by default.
var DefaultCNIBinDirs = network.DefaultCNIBinDirs

// SplitNet moves the CNI networks among s.Net (ParseNet's cni:NETWORK) to
// s.CNINetworks, in order, and a slot (ParseNet's slot) to s.NetSlot.
func (s *Spec) SplitNet() {
	var taps []Net
	for _, n := range s.Net {
		if n.Slot {
			s.NetSlot = true
			continue
		}
		if n.CNI != "" {
			s.CNINetworks = append(s.CNINetworks, n.CNI)
			continue
		}
		taps = append(taps, n)
	}
	s.Net = taps
}

// wantsNetwork reports whether the spec asks package network for a
// network: CNI networks or a slot.
func (s *Spec) wantsNetwork() bool { return len(s.CNINetworks) > 0 || s.NetSlot }

// netSpec is what the sandbox asks of package network.
func netSpec(rec *record) (network.Spec, error) {
	ports, err := network.ParsePorts(rec.Spec.Ports)
	if err != nil {
		return network.Spec{}, err
	}
	eg, err := egressPolicy(rec.Spec)
	if err != nil {
		return network.Spec{}, err
	}
	return network.Spec{SandboxID: rec.ID, CNINetworks: rec.Spec.CNINetworks, Ports: ports, Egress: eg}, nil
}

// netManager is the network manager of a sandbox spec: the host side in
// Spec.NetNS (the caller's namespace when empty), the spec's CNI dirs,
// slots in the default range.
func netManager(s Spec) *network.Manager {
	h := network.Host{NetNS: s.NetNS}
	return &network.Manager{Host: h, CNI: network.CNI{ConfDir: s.CNIConfDir, BinDirs: s.CNIBinDirs, Host: h},
		Slots: network.Slots{Host: h}}
}

// checkNetwork validates the spec's networks, published ports and egress
// policy at create and fills in the CNI directories and the host's egress
// default, before anything is made.
func checkNetwork(ctx context.Context, spec *Spec) error {
	if !spec.wantsNetwork() {
		if len(spec.Ports) > 0 {
			return specError(fmt.Errorf("publish %q: published ports need a network: add --net slot or --net cni:NETWORK", spec.Ports[0]))
		}
		if spec.Egress != "" || len(spec.AllowEgress) > 0 {
			return specError(errors.New("egress: an egress policy needs a network: add --net slot or --net cni:NETWORK"))
		}
		return nil
	}
	if len(spec.Net) > 0 {
		return specError(errors.New("net: slots and CNI networks cannot be mixed with taps (auto, tap=NAME): give only slot or cni:NETWORK interfaces"))
	}
	if spec.NetSlot && len(spec.CNINetworks) > 0 {
		return specError(errors.New("net: a sandbox has either a slot or CNI networks: give --net slot or --net cni:NETWORK"))
	}
	if spec.Metadata != "" {
		return specError(errors.New("metadata: the metadata service is not served on CNI networks or slots yet: leave out the metadata or use --net auto"))
	}
	if err := fillEgress(spec); err != nil {
		return err
	}
	eg, err := egressPolicy(*spec)
	if err != nil {
		return specError(err)
	}
	if eg != nil && len(eg.Domains) > 0 && !spec.NetSlot {
		return specError(fmt.Errorf("allow-egress %q: domain rules need the slot's DNS forwarder: use --net slot, or allow the domain's addresses by CIDR", eg.Domains[0]))
	}
	if len(spec.CNINetworks) > 0 {
		if spec.CNIConfDir == "" {
			spec.CNIConfDir = os.Getenv(EnvCNIConfDir)
		}
		if spec.CNIConfDir == "" {
			spec.CNIConfDir = DefaultCNIConfDir
		}
		if err := absPath(&spec.CNIConfDir); err != nil {
			return specError(err)
		}
		if len(spec.CNIBinDirs) == 0 {
			if env := os.Getenv(EnvCNIPath); env != "" {
				spec.CNIBinDirs = filepath.SplitList(env)
			} else {
				spec.CNIBinDirs = append([]string(nil), DefaultCNIBinDirs...)
			}
		}
	}
	ports, err := network.ParsePorts(spec.Ports)
	if err != nil {
		return specError(err)
	}
	spec.Ports = spec.Ports[:0:0]
	for _, p := range ports {
		spec.Ports = append(spec.Ports, p.String())
	}
	err = netManager(*spec).Check(ctx, network.Spec{SandboxID: spec.ID, CNINetworks: spec.CNINetworks, Ports: ports, Egress: eg})
	if err != nil {
		return specError(err)
	}
	return nil
}

// setUpNetwork builds the sandbox's CNI networks or slot (from pool when
// it serves the same host namespace), published ports and egress policy
// and records them in rec.Network, saving the record before and after
// (save), so that a crash in between leaves rec.NetActive for gc to
// find. On failure nothing is left.
func setUpNetwork(ctx context.Context, rec *record, pool *network.Pool, save func() error) (err error) {
	if !rec.Spec.wantsNetwork() {
		return nil
	}
	ns, err := netSpec(rec)
	if err != nil {
		return err
	}
	rec.NetActive = true
	if err := save(); err != nil {
		rec.NetActive = false
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, releaseNetwork(context.WithoutCancel(ctx), rec), save())
		}
	}()
	m := netManager(rec.Spec)
	owner := tapOwner(rec)
	if owner != nil {
		// A jailed Firecracker attaches to its taps as the sandbox's uid:
		// new taps are made its, and a pooled slot's tap, made before that
		// uid was known, is handed to it when claimed.
		o := &network.TapOwner{UID: owner.UID, GID: owner.GID}
		m.CNI.TapOwner, m.Slots.TapOwner = o, o
	}
	if rec.Spec.NetSlot && pool != nil && sameNetNS(pool.Host().NetNS, m.Host.NetNS) {
		m.Pool = pool
	}
	nrec, err := m.Setup(ctx, ns)
	if err != nil {
		return err
	}
	rec.Network = nrec
	return save()
}

// releaseNetwork tears down what the sandbox's network holds: the recorded
// network.Record, or, when a start crashed before recording it, whatever
// the sandbox's ID names (TeardownID). rec.Network and rec.NetActive are
// cleared once the tear-down succeeded, so the record says it is done and
// a second call does nothing; the caller saves rec.
func releaseNetwork(ctx context.Context, rec *record) error {
	if !rec.NetActive && rec.Network == nil {
		return nil
	}
	m := netManager(rec.Spec)
	var err error
	if rec.Network != nil {
		err = m.Teardown(ctx, rec.Network)
	} else {
		err = m.TeardownID(ctx, rec.ID, rec.Spec.CNINetworks)
	}
	if err != nil {
		return err
	}
	rec.Network, rec.NetActive = nil, false
	return nil
}

// applyNetwork puts the sandbox's network record into the VMM's
// configuration: its namespace, interfaces and the kernel's ip= argument.
func applyNetwork(rec *record, cfg *vmm.Config) {
	n := rec.Network
	if n == nil {
		return
	}
	cfg.NetworkInterfaces = append(cfg.NetworkInterfaces, n.Interfaces(nil, nil)...)
	if ip := n.KernelIPArg(); ip != "" && !hasIPArg(cfg.KernelArgs) {
		cfg.KernelArgs = strings.TrimSpace(ip + " " + cfg.KernelArgs)
	}
	if cfg.Jailer != nil {
		cfg.Jailer.NetNS = n.NetNS()
	} else {
		cfg.NetNS = n.NetNS()
	}
}

// hasIPArg reports whether kernel arguments set ip= themselves (before
// "--", after which they are init's): the user's setting wins.
func hasIPArg(args string) bool {
	for _, f := range strings.Fields(args) {
		if f == "--" {
			return false
		}
		if strings.HasPrefix(f, "ip=") {
			return true
		}
	}
	return false
}

// checkRestoreNetwork refuses to restore a snapshot of a sandbox on CNI
// networks (dir is the snapshot's directory): its guest keeps the address
// and MAC its CNI attachment gave it, and a new attachment (a new ADD
// for the new sandbox) gives others, which the guest would not learn.
// A slot has the same guest side everywhere, so slots are the way to
// snapshot, restore and clone a networked sandbox.
func checkRestoreNetwork(s Spec, dir string) error {
	if len(s.CNINetworks) == 0 {
		return nil
	}
	return fmt.Errorf("restore the snapshot in %s: its sandbox is on CNI network %q, whose address its guest keeps and a new attachment would not give back: give sandboxes to snapshot or clone --net slot instead: %w",
		dir, s.CNINetworks[0], ErrNotSupported)
}

// sameNetNS reports whether two host namespace settings (names, paths or
// "" for the caller's) name one namespace.
func sameNetNS(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	pa, err := netdev.ResolveNetNS(a)
	if err != nil {
		return false
	}
	pb, err := netdev.ResolveNetNS(b)
	if err != nil {
		return false
	}
	ia := inodeOf(pa)
	return ia != "" && ia == inodeOf(pb)
}

// inodeOf returns a namespace file's device and inode, or "" when it
// cannot be read.
func inodeOf(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
