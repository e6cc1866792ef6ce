package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
// s.CNINetworks, in order.
func (s *Spec) SplitNet() {
	var taps []Net
	for _, n := range s.Net {
		if n.CNI != "" {
			s.CNINetworks = append(s.CNINetworks, n.CNI)
			continue
		}
		taps = append(taps, n)
	}
	s.Net = taps
}

// netSpec is what the sandbox asks of package network.
func netSpec(rec *record) (network.Spec, error) {
	ports, err := network.ParsePorts(rec.Spec.Ports)
	if err != nil {
		return network.Spec{}, err
	}
	return network.Spec{SandboxID: rec.ID, CNINetworks: rec.Spec.CNINetworks, Ports: ports}, nil
}

// netManager is the network manager of a sandbox spec: the host side in
// Spec.NetNS (the caller's namespace when empty), the spec's CNI dirs.
func netManager(s Spec) *network.Manager {
	h := network.Host{NetNS: s.NetNS}
	return &network.Manager{Host: h, CNI: network.CNI{ConfDir: s.CNIConfDir, BinDirs: s.CNIBinDirs, Host: h}}
}

// checkNetwork validates the spec's CNI networks and published ports at
// create and fills in the CNI directories, before anything is made.
func checkNetwork(ctx context.Context, spec *Spec) error {
	if len(spec.CNINetworks) == 0 {
		if len(spec.Ports) > 0 {
			return specError(fmt.Errorf("publish %q: published ports need a CNI network: add --net cni:NETWORK", spec.Ports[0]))
		}
		return nil
	}
	if len(spec.Net) > 0 {
		return specError(errors.New("net: CNI networks and taps (auto, tap=NAME) cannot be mixed: give only cni:NETWORK interfaces"))
	}
	if spec.Metadata != "" {
		return specError(errors.New("metadata: the metadata service is not served on CNI networks yet: leave out the metadata or use --net auto"))
	}
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
	ports, err := network.ParsePorts(spec.Ports)
	if err != nil {
		return specError(err)
	}
	spec.Ports = spec.Ports[:0:0]
	for _, p := range ports {
		spec.Ports = append(spec.Ports, p.String())
	}
	err = netManager(*spec).Check(ctx, network.Spec{SandboxID: spec.ID, CNINetworks: spec.CNINetworks, Ports: ports})
	if err != nil {
		return specError(err)
	}
	return nil
}

// setUpNetwork builds the sandbox's CNI networks and published ports and
// records them in rec.Network, saving the record before and after
// (save), so that a crash in between leaves rec.NetActive for gc to
// find. On failure nothing is left.
func setUpNetwork(ctx context.Context, rec *record, save func() error) (err error) {
	if len(rec.Spec.CNINetworks) == 0 {
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
	if o := tapOwner(rec); o != nil {
		// A jailed Firecracker attaches to its taps as the sandbox's uid.
		m.CNI.TapOwner = &network.TapOwner{UID: o.UID, GID: o.GID}
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
