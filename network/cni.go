package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// CNI defaults.
const (
	DefaultCNIConfDir  = "/etc/cni/net.d"
	DefaultCNICacheDir = "/var/lib/cni"
)

// DefaultCNIBinDirs are searched for plugins, in order, when CNI.BinDirs is
// empty: the upstream location, then Debian's containernetworking-plugins.
var DefaultCNIBinDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}

// CNI attaches sandboxes to CNI networks defined by conflists. The zero
// value uses the defaults above and the caller's namespace as the host.
type CNI struct {
	ConfDir  string   // directory of *.conflist (and *.conf) files
	BinDirs  []string // plugin directories
	CacheDir string   // libcni's result cache
	Host     Host     // where plugins run (they see it as the host)
	// TapOwner, if set, may attach to the taps without privilege.
	TapOwner *TapOwner
}

// CNIAttachment records a sandbox's CNI attachments; the runtime persists
// it and hands it to Detach. It holds each conflist as it was at ADD, so
// DEL works even if the file changed or went away since.
type CNIAttachment struct {
	SandboxID  string         `json:"sandbox_id"`
	NetNS      string         `json:"netns"` // path of the sandbox's namespace; the VMM runs in it
	Interfaces []CNIInterface `json:"interfaces"`
}

// CNIInterface is one network of a CNIAttachment: the CNI interface in the
// sandbox's namespace and the tap the VMM attaches to, joined by tc.
type CNIInterface struct {
	Network  string          `json:"network"`
	IfName   string          `json:"if_name"` // the CNI interface: eth0, eth1, …
	Tap      string          `json:"tap"`     // the VMM's host_dev_name, in NetNS
	ConfList json.RawMessage `json:"conflist"`
	Guest    GuestConfig     `json:"guest"` // address, gateway, DNS and MAC for the guest
}

func (c CNI) confDir() string {
	if c.ConfDir == "" {
		return DefaultCNIConfDir
	}
	return c.ConfDir
}

func (c CNI) binDirs() []string {
	if len(c.BinDirs) == 0 {
		return DefaultCNIBinDirs
	}
	return c.BinDirs
}

func (c CNI) cacheDir() string {
	if c.CacheDir == "" {
		return DefaultCNICacheDir
	}
	return c.CacheDir
}

func (c CNI) config() *libcni.CNIConfig {
	// A plugin's stderr reaches the caller only in its error: a library
	// does not write to the process's stderr.
	var exec invoke.Exec = &nsExec{raw: &invoke.RawExec{}, ns: c.Host.NetNS}
	return libcni.NewCNIConfigWithCacheDir(c.binDirs(), c.cacheDir(), exec)
}

// nsExec runs CNI plugins from a thread inside the host namespace, so
// that they see it as the host (the child inherits the forking thread's
// network namespace).
type nsExec struct {
	version.PluginDecoder
	raw *invoke.RawExec
	ns  string
}

func (e *nsExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var out []byte
	err := inNS(e.ns, func() error {
		var err error
		out, err = e.raw.ExecPlugin(ctx, path, stdin, environ)
		return err
	})
	return out, err
}

func (e *nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return e.raw.FindInPath(plugin, paths)
}

// Load reads the conflist of network from the conf dir and checks that its
// plugins exist. An unknown network is an error matching ErrNotFound that
// names the network and the directory.
func (c CNI) Load(ctx context.Context, network string) (*libcni.NetworkConfigList, error) {
	if network == "" || strings.ContainsAny(network, "/\x00") {
		return nil, invalid("CNI network", network, "not a network name")
	}
	list, err := libcni.LoadNetworkConf(c.confDir(), network)
	if err != nil {
		var nf libcni.NotFoundError
		var none libcni.NoConfigsFoundError
		if errors.As(err, &nf) || errors.As(err, &none) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("CNI network %q: no conflist of that name in %s: %w", network, c.confDir(), ErrNotFound)
		}
		return nil, fmt.Errorf("CNI network %q: %w", network, err)
	}
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, c.binDirs()); err != nil {
			return nil, fmt.Errorf("CNI network %q: plugin %q not in %s: %w", network, p.Network.Type,
				strings.Join(c.binDirs(), ":"), ErrNotFound)
		}
	}
	return list, nil
}

// Attach makes the namespace "kindling-<sandboxID>", runs ADD then CHECK of
// each network's conflist in it (container ID sandboxID, interfaces eth0,
// eth1, …), creates a tap kdtap0, kdtap1, … per interface and joins each
// pair with tc redirects. The VMM must run in rec.NetNS with those taps and
// the MACs in each interface's Guest.
//
// On any failure everything done so far is undone (DEL of every conflist
// that was added, even halfway, the namespace with its taps) and the error
// says which network failed.
func (c CNI) Attach(ctx context.Context, sandboxID string, networks []string) (_ *CNIAttachment, err error) {
	if err := ValidateID(sandboxID); err != nil {
		return nil, fmt.Errorf("attach CNI: %w", err)
	}
	if len(networks) == 0 {
		return nil, invalid("CNI networks of sandbox", sandboxID, "none given")
	}
	lists := make([]*libcni.NetworkConfigList, len(networks))
	for i, n := range networks {
		if slices.Contains(networks[:i], n) {
			return nil, invalid("CNI network", n, "given twice")
		}
		if lists[i], err = c.Load(ctx, n); err != nil {
			return nil, err
		}
	}
	nsPath, err := netdev.CreateNetNS(CNINetNSName(sandboxID))
	if errors.Is(err, netdev.ErrExists) {
		return nil, fmt.Errorf("attach sandbox %q to CNI: namespace %s exists (attached already, or Detach was not run): %w",
			sandboxID, CNINetNSName(sandboxID), ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("attach sandbox %q to CNI: %w", sandboxID, err)
	}
	rec := &CNIAttachment{SandboxID: sandboxID, NetNS: nsPath}
	defer func() {
		if err != nil {
			// Detach DELs every interface in rec, including a half-added one.
			err = errors.Join(err, c.Detach(context.WithoutCancel(ctx), rec))
		}
	}()
	cfg := c.config()
	for i, list := range lists {
		iface := CNIInterface{
			Network:  list.Name,
			IfName:   fmt.Sprintf("eth%d", i),
			Tap:      fmt.Sprintf("kdtap%d", i),
			ConfList: json.RawMessage(list.Bytes),
		}
		rec.Interfaces = append(rec.Interfaces, iface)
		rt := c.runtimeConf(rec, iface)
		res, err := cfg.AddNetworkList(ctx, list, rt)
		if err != nil {
			return nil, fmt.Errorf("CNI network %q: ADD: %w", list.Name, err)
		}
		if err := check(ctx, cfg, list, rt); err != nil {
			return nil, err
		}
		guest, err := guestFromResult(res, iface.IfName)
		if err != nil {
			return nil, fmt.Errorf("CNI network %q: %w", list.Name, err)
		}
		if err := joinTap(ctx, nsPath, iface.IfName, iface.Tap, c.TapOwner, &guest); err != nil {
			return nil, fmt.Errorf("CNI network %q: %w", list.Name, err)
		}
		rec.Interfaces[i].Guest = guest
	}
	return rec, nil
}

// check runs CHECK where the conflist's version has it (0.4.0 on).
func check(ctx context.Context, cfg *libcni.CNIConfig, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	if ok, err := version.GreaterThanOrEqualTo(list.CNIVersion, "0.4.0"); err != nil || !ok {
		return nil
	}
	if err := cfg.CheckNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI network %q: CHECK: %w", list.Name, err)
	}
	return nil
}

func (c CNI) runtimeConf(rec *CNIAttachment, iface CNIInterface) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: rec.SandboxID, NetNS: rec.NetNS, IfName: iface.IfName}
}

// Check runs CHECK for each network of rec and checks that its taps still
// exist.
func (c CNI) Check(ctx context.Context, rec *CNIAttachment) error {
	cfg := c.config()
	for _, iface := range rec.Interfaces {
		list, err := libcni.NetworkConfFromBytes(iface.ConfList)
		if err != nil {
			return fmt.Errorf("CNI network %q: recorded conflist: %w", iface.Network, err)
		}
		if err := check(ctx, cfg, list, c.runtimeConf(rec, iface)); err != nil {
			return err
		}
		if ok, err := netdev.TapExists(iface.Tap, rec.NetNS); err != nil || !ok {
			return fmt.Errorf("CNI network %q: tap %s in %s: %w", iface.Network, iface.Tap, rec.NetNS, errors.Join(err, ErrNotFound))
		}
	}
	return nil
}

// Detach runs DEL for every network of rec, last first, then deletes the
// sandbox's namespace (its taps and tc filters go with it). It is
// idempotent: run it on every end of the sandbox; DEL of something already
// deleted succeeds, and so does a missing namespace. It tries everything
// and returns the errors joined; the runtime keeps the record until it
// returns nil.
func (c CNI) Detach(ctx context.Context, rec *CNIAttachment) error {
	if rec == nil {
		return nil
	}
	cfg := c.config()
	var errs []error
	for i := len(rec.Interfaces) - 1; i >= 0; i-- {
		iface := rec.Interfaces[i]
		list, err := libcni.NetworkConfFromBytes(iface.ConfList)
		if err != nil {
			errs = append(errs, fmt.Errorf("CNI network %q: recorded conflist: %w", iface.Network, err))
			continue
		}
		if err := cfg.DelNetworkList(ctx, list, c.runtimeConf(rec, iface)); err != nil {
			errs = append(errs, fmt.Errorf("CNI network %q: DEL: %w", iface.Network, err))
		}
	}
	if err := netdev.DeleteNetNS(CNINetNSName(rec.SandboxID)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// guestFromResult picks the interface's first IPv4 address (else its
// first address), gateway and DNS from a CNI result.
func guestFromResult(res cnitypes.Result, ifName string) (GuestConfig, error) {
	var g GuestConfig
	r, err := types100.GetResult(res)
	if err != nil {
		return g, fmt.Errorf("read result: %w", err)
	}
	idx := -1
	for i, in := range r.Interfaces {
		if in.Name == ifName && in.Sandbox != "" {
			idx = i
			g.MAC = in.Mac
			g.MTU = in.Mtu
		}
	}
	var best *types100.IPConfig
	for _, ip := range r.IPs {
		if ip.Interface != nil && idx >= 0 && *ip.Interface != idx {
			continue
		}
		if best == nil || best.Address.IP.To4() == nil && ip.Address.IP.To4() != nil {
			best = ip
		}
	}
	if best == nil {
		return g, fmt.Errorf("the result gives no address for %s", ifName)
	}
	addr, ok := netip.AddrFromSlice(best.Address.IP)
	if !ok {
		return g, fmt.Errorf("the result's address %v is not an IP address", best.Address.IP)
	}
	ones, _ := best.Address.Mask.Size()
	g.Address = netip.PrefixFrom(addr.Unmap(), ones)
	if gw, ok := netip.AddrFromSlice(best.Gateway); ok {
		g.Gateway = gw.Unmap()
	}
	for _, s := range r.DNS.Nameservers {
		if a, err := netip.ParseAddr(s); err == nil {
			g.DNS = append(g.DNS, a)
		}
	}
	return g, nil
}

// hostLocalDataDir is where the host-local IPAM plugin keeps its leases,
// one directory per network, one file per address holding the container ID.
const hostLocalDataDir = "/var/lib/cni/networks"
