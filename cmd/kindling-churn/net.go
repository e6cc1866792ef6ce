package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

// Networks the cycles can give their sandboxes besides none and auto.
const (
	netSlot = "slot" // --net slot
	netCNI  = "cni"  // --net cni:NETWORK, a bridge network the run makes
)

// cniPluginDir is where Debian's containernetworking-plugins puts them.
const cniPluginDir = "/usr/lib/cni"

// netEnv is a run's own stand-in host for slot and CNI networks: a
// network namespace of its own (--netns of every sandbox) that plays the
// host, so the slots' veths, the bridge, the port and egress tables and
// the bridge's addresses never touch the real host; and, for CNI, a conf
// dir with one bridge network on a private subnet.
type netEnv struct {
	kind    string // netSlot or netCNI
	hostNS  string // name of the host namespace
	hostPth string
	confDir string // CNI only
	network string // CNI only
	ports   []string
	egress  []string

	mu sync.Mutex
	// slots are the slot namespaces this run's sandboxes were given. Slot
	// names are the host's ("kdslot-<N>", lowest free first), shared with
	// every other runtime on it, so the audit counts only these.
	slots map[string]bool
}

// saw notes the slot namespace of a started sandbox of this run; e may be
// nil (a run without --net).
func (e *netEnv) saw(in sandbox.Info) {
	if e == nil || in.Network == nil || in.Network.Kind != "slot" || in.Network.NetNS == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.slots == nil {
		e.slots = map[string]bool{}
	}
	e.slots[filepath.Base(in.Network.NetNS)] = true
}

// newNetEnv makes the host namespace (and the conflist) under tmp.
func newNetEnv(c config, tmp string) (*netEnv, error) {
	e := &netEnv{kind: c.net, hostNS: fmt.Sprintf("kchurn-host-%d", os.Getpid()), ports: c.publish, egress: c.allowEgress}
	path, err := netdev.CreateNetNS(e.hostNS)
	if err != nil {
		return nil, fmt.Errorf("make the run's host namespace: %w", err)
	}
	e.hostPth = path
	if err := e.loUp(); err != nil {
		return nil, errors.Join(err, e.close())
	}
	if e.kind == netCNI {
		for _, p := range []string{"bridge", "host-local"} {
			if _, err := os.Stat(filepath.Join(cniPluginDir, p)); err != nil {
				return nil, errors.Join(usagef("--net cni needs the CNI plugin %s in %s (Debian: containernetworking-plugins)", p, cniPluginDir), e.close())
			}
		}
		e.confDir = filepath.Join(tmp, "cni")
		e.network = fmt.Sprintf("kchurn-%d", os.Getpid())
		// A /16 inside the run's own host namespace: host-local hands
		// released addresses out again only after the rest, so 1,000
		// cycles need more than a /24.
		conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [{"type": "bridge", "bridge": "kchbr%d",
			"isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.218.0.0/16"}]]}}]}`, e.network, os.Getpid()%100000)
		if err := os.MkdirAll(e.confDir, 0o755); err != nil {
			return nil, errors.Join(err, e.close())
		}
		if err := os.WriteFile(filepath.Join(e.confDir, e.network+".conflist"), []byte(conf), 0o644); err != nil {
			return nil, errors.Join(err, e.close())
		}
	}
	return e, nil
}

func (e *netEnv) loUp() error {
	fd, err := netns.GetFromPath(e.hostPth)
	if err != nil {
		return err
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	return err
}

// close deletes the host namespace (with the bridge in it) and the
// network's lease directory.
func (e *netEnv) close() error {
	var errs []error
	if e.network != "" {
		errs = append(errs, os.RemoveAll(filepath.Join("/var/lib/cni/networks", e.network)))
	}
	errs = append(errs, netdev.DeleteNetNS(e.hostNS))
	return errors.Join(errs...)
}

// apply puts the network into a cycle's spec.
func (e *netEnv) apply(s *sandbox.Spec) {
	s.NetNS = e.hostNS
	if e.kind == netSlot {
		s.Net = []sandbox.Net{{Slot: true}}
	} else {
		s.Net = []sandbox.Net{{CNI: e.network}}
		s.CNIConfDir, s.CNIBinDirs = e.confDir, []string{cniPluginDir}
	}
	s.Ports = e.ports
	s.AllowEgress = e.egress
}

// cliArgs are apply's flags for kindling create.
func (e *netEnv) cliArgs() []string {
	a := []string{"--netns", e.hostNS}
	if e.kind == netSlot {
		a = append(a, "--net", "slot")
	} else {
		a = append(a, "--net", "cni:"+e.network, "--cni-conf-dir", e.confDir, "--cni-bin-dir", cniPluginDir)
	}
	for _, p := range e.ports {
		a = append(a, "-p", p)
	}
	for _, r := range e.egress {
		a = append(a, "--allow-egress", r)
	}
	return a
}

// leaks is the network package's audit, narrowed to this run: links and
// tables in its host namespace, leases of its network held by its
// sandboxes, its sandboxes' CNI namespaces and the slot namespaces its
// sandboxes were given (a slot left by a failed set-up still shows as its
// host veth in the run's host namespace).
func (e *netEnv) leaks(base hostSnapshot) []string {
	inv, err := network.Leaks(context.Background(), network.LeakOptions{
		Host: network.Host{NetNS: e.hostPth}, CNIConfDir: e.confDir,
		OwnsID: func(id string) bool { return strings.HasPrefix(id, "churn-") }})
	if err != nil {
		return []string{"network audit: " + err.Error()}
	}
	var leaks []string
	for _, n := range inv.NetNS {
		e.mu.Lock()
		ours := e.slots[n]
		e.mu.Unlock()
		if !base.netns[filepath.Join(netdev.NetNSDir, n)] && (ours || strings.Contains(n, "churn-")) {
			leaks = append(leaks, "network namespace left: "+n)
		}
	}
	for _, l := range inv.Links {
		leaks = append(leaks, "link left in the host namespace: "+l)
	}
	for _, t := range inv.Tables {
		leaks = append(leaks, "nf_tables table left: "+t)
	}
	for _, l := range inv.Leases {
		leaks = append(leaks, fmt.Sprintf("host-local lease left: %+v", l))
	}
	return leaks
}
