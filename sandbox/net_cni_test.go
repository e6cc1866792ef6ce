package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/vmm"
)

// cniPluginDir is where Debian's containernetworking-plugins puts them.
const cniPluginDir = "/usr/lib/cni"

// needCNI skips unless this process may make namespaces and Debian's
// bridge and host-local plugins are installed.
func needCNI(t *testing.T) {
	t.Helper()
	requireNet(t)
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(cniPluginDir, p)); err != nil {
			t.Skipf("needs the CNI plugin %s in %s (Debian: containernetworking-plugins)", p, cniPluginDir)
		}
	}
}

func hexID(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// cniEnv is a test's stand-in host: a namespace of its own playing the
// host, a conf dir with one bridge network on a test subnet.
type cniEnv struct {
	hostNS  string // name of the host namespace
	hostPth string // its path
	confDir string
	network string
}

// newCNIEnv makes the host namespace and writes the conflist; extra
// plugins are appended to the bridge's. Everything is removed at cleanup.
func newCNIEnv(t *testing.T, extra ...string) *cniEnv {
	t.Helper()
	h := hexID(t, 3)
	e := &cniEnv{hostNS: "kdsbx-host-" + h, confDir: t.TempDir(), network: "kdsbx-net-" + h}
	path, err := netdev.CreateNetNS(e.hostNS)
	if err != nil {
		t.Fatal(err)
	}
	e.hostPth = path
	t.Cleanup(func() {
		if err := netdev.DeleteNetNS(e.hostNS); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	var b [1]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	// 10.214.N.0/24 lives only inside the test's host namespace.
	subnet := fmt.Sprintf("10.214.%d", int(b[0])%200+10)
	plugins := append([]string{fmt.Sprintf(`{"type": "bridge", "bridge": "kdsbr%s", "isGateway": true,
		"ipam": {"type": "host-local", "ranges": [[{"subnet": "%s.0/24"}]]}}`, h, subnet)}, extra...)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [%s]}`, e.network, strings.Join(plugins, ","))
	if err := os.WriteFile(filepath.Join(e.confDir, e.network+".conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join("/var/lib/cni/networks", e.network)) })
	return e
}

func (e *cniEnv) spec(t *testing.T, id, fc string, ports ...string) Spec {
	return Spec{ID: id, Kernel: haltGuest(t, "cni"), Firecracker: fc, NetNS: e.hostNS,
		Net: []Net{{CNI: e.network}}, Ports: ports, CNIConfDir: e.confDir, CNIBinDirs: []string{cniPluginDir}}
}

// leaks is what the sandbox id holds in e's host namespace and
// /run/netns, per network.Leaks.
func (e *cniEnv) leaks(t *testing.T, id string) network.Inventory {
	t.Helper()
	inv, err := network.Leaks(context.Background(), network.LeakOptions{
		Host: network.Host{NetNS: e.hostPth}, CNIConfDir: e.confDir,
		OwnsID: func(c string) bool { return c == id }})
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, n := range inv.NetNS {
		if n == network.CNINetNSName(id) {
			mine = append(mine, n)
		}
	}
	inv.NetNS = mine
	return inv
}

// checkNetworkUp checks what a started sandbox id holds: its namespace
// with the CNI interface, the tap and a mirred redirect between them, a
// host-local lease, and the published port in the host's nf_tables set.
func (e *cniEnv) checkNetworkUp(t *testing.T, r *Runtime, id string, hostPort uint16) {
	t.Helper()
	in, err := r.Inspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	nsPath := filepath.Join(netdev.NetNSDir, network.CNINetNSName(id))
	if got, want := inode(t, fmt.Sprintf("/proc/%d/ns/net", in.PID)), inode(t, nsPath); got != want {
		t.Errorf("the VMM runs in namespace inode %d, want %d (%s)", got, want, nsPath)
	}
	fd, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatalf("sandbox namespace: %v", err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("CNI interface eth0 in %s: %v", nsPath, err)
	}
	tap, err := h.LinkByName("kdtap0")
	if err != nil {
		t.Fatalf("tap kdtap0 in %s: %v", nsPath, err)
	}
	for _, l := range []netlink.Link{eth, tap} {
		filters, err := h.FilterList(l, netlink.HANDLE_INGRESS)
		if err != nil {
			t.Fatalf("filters of %s: %v", l.Attrs().Name, err)
		}
		redirects := 0
		for _, f := range filters {
			if u, ok := f.(*netlink.U32); ok {
				for _, a := range u.Actions {
					if m, ok := a.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR {
						redirects++
					}
				}
			}
		}
		if redirects == 0 {
			t.Errorf("no mirred redirect on the ingress of %s", l.Attrs().Name)
		}
	}
	inv := e.leaks(t, id)
	if len(inv.Leases) != 1 || inv.Leases[0].ContainerID != id {
		t.Errorf("host-local leases of %s: %v, want one", id, inv.Leases)
	}
	if len(inv.NetNS) != 1 {
		t.Errorf("namespaces of %s: %v", id, inv.NetNS)
	}
	if !e.portPublished(t, hostPort) {
		t.Errorf("host port %d/tcp is in no kindling table's tcp_ports set (tables: %v)", hostPort, inv.Tables)
	}
	if len(in.Spec.CNINetworks) != 1 || in.Spec.CNINetworks[0] != e.network {
		t.Errorf("Info.Spec.CNINetworks = %v", in.Spec.CNINetworks)
	}
}

// portPublished reports whether a kindling table in the host namespace
// has port in its tcp_ports set.
func (e *cniEnv) portPublished(t *testing.T, port uint16) bool {
	t.Helper()
	fd, err := netns.GetFromPath(e.hostPth)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if !strings.HasPrefix(tb.Name, "kindling_p_") {
			continue
		}
		set, err := c.GetSetByName(tb, "tcp_ports")
		if err != nil {
			continue
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			t.Fatal(err)
		}
		for _, el := range elems {
			if len(el.Key) >= 2 && binary.BigEndian.Uint16(el.Key) == port {
				return true
			}
		}
	}
	return false
}

func (e *cniEnv) checkNothingLeft(t *testing.T, id, when string) {
	t.Helper()
	if inv := e.leaks(t, id); !inv.Empty() {
		t.Errorf("%s: left behind: %s", when, inv)
	}
}

// The sandbox's network is there while it runs and gone after every end.
func TestCNINetworkLifecycle(t *testing.T) {
	needCNI(t)
	ctx := context.Background()
	t.Run("stop", func(t *testing.T) {
		e := newCNIEnv(t)
		r, fc := newRuntime(t, false)
		id := "kdsbx-" + hexID(t, 4)
		if _, err := r.Create(ctx, e.spec(t, id, fc, "18080:80"), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.checkNothingLeft(t, id, "after create")
		if _, err := r.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		e.checkNetworkUp(t, r, id, 18080)
		if err := r.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
		e.checkNothingLeft(t, id, "after stop")
		var rec record
		if err := r.st.Load(id, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Network != nil || rec.NetActive {
			t.Errorf("after stop the record still holds the network: %+v, active %v", rec.Network, rec.NetActive)
		}
		// Started again, it gets its network again.
		if _, err := r.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		e.checkNetworkUp(t, r, id, 18080)
		if err := r.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := r.Remove(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		e.checkNothingLeft(t, id, "after rm")
	})
	t.Run("gc after the monitor died", func(t *testing.T) {
		e := newCNIEnv(t)
		r, fc := newRuntime(t, false)
		id := "kdsbx-" + hexID(t, 4)
		if _, err := r.Create(ctx, e.spec(t, id, fc, "18081:80/tcp"), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		in, err := r.Start(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		e.checkNetworkUp(t, r, id, 18081)
		if err := syscall.Kill(in.MonitorPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitExited(t, in.MonitorPID)
		rep, err := r.Collect(ctx, GCOptions{KillOrphans: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Removed) != 1 || rep.Removed[0] != id {
			t.Errorf("gc removed %v, want [%s]", rep.Removed, id)
		}
		e.checkNothingLeft(t, id, "after gc")
	})
	t.Run("gc after a start crashed before recording the network", func(t *testing.T) {
		e := newCNIEnv(t)
		r, fc := newRuntime(t, false)
		id := "kdsbx-" + hexID(t, 4)
		if _, err := r.Create(ctx, e.spec(t, id, fc, "18082:80"), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// What Start does up to the crash: mark the record, set up.
		l, err := r.st.Lock(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var rec record
		if err := l.Load(&rec); err != nil {
			t.Fatal(err)
		}
		rec.NetActive = true
		if err := l.Save(&rec); err != nil {
			t.Fatal(err)
		}
		ns, err := netSpec(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := netManager(rec.Spec).Setup(ctx, ns); err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		if inv := e.leaks(t, id); len(inv.Leases) != 1 || len(inv.NetNS) != 1 {
			t.Fatalf("the set-up made %s", inv)
		}
		if _, err := r.Collect(ctx, GCOptions{}); err != nil {
			t.Fatal(err)
		}
		e.checkNothingLeft(t, id, "after gc")
		var after record
		if err := r.st.Load(id, &after); err != nil {
			t.Fatalf("gc removed the never-started sandbox: %v", err)
		}
		if after.NetActive {
			t.Error("the record still says the network is active")
		}
		if err := r.Remove(ctx, id, false); err != nil {
			t.Fatal(err)
		}
	})
}

// waitExited waits until process pid has exited (and been reaped).
func waitExited(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not exit", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A start that fails after the CNI attachment (its host port is taken)
// or inside it (a plugin fails after the bridge's ADD) leaves nothing.
func TestCNIStartFailsHalfway(t *testing.T) {
	needCNI(t)
	ctx := context.Background()
	t.Run("port in use", func(t *testing.T) {
		e := newCNIEnv(t)
		r, fc := newRuntime(t, false)
		var ln net.Listener
		if err := netdev.Do(e.hostPth, func() (err error) {
			ln, err = net.Listen("tcp", "0.0.0.0:18083")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		id := "kdsbx-" + hexID(t, 4)
		if _, err := r.Create(ctx, e.spec(t, id, fc, "18083:80"), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := r.Start(ctx, id)
		if err == nil || !strings.Contains(err.Error(), "18083") {
			t.Fatalf("Start: %v, want the port in use", err)
		}
		t.Logf("Start: %v", err)
		e.checkNothingLeft(t, id, "after the failed start")
		in, err := r.Inspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Status != Created {
			t.Errorf("status %s after the failed start, want created", in.Status)
		}
		if err := r.Remove(ctx, id, false); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("plugin fails", func(t *testing.T) {
		e := newCNIEnv(t, `{"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.kindling_no_such_key": "1"}}`)
		if _, err := os.Stat(filepath.Join(cniPluginDir, "tuning")); err != nil {
			t.Skipf("needs the CNI plugin tuning in %s", cniPluginDir)
		}
		r, fc := newRuntime(t, false)
		id := "kdsbx-" + hexID(t, 4)
		if _, err := r.Create(ctx, e.spec(t, id, fc), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Start(ctx, id); err == nil {
			t.Fatal("Start succeeded, want the tuning plugin to fail")
		}
		e.checkNothingLeft(t, id, "after the failed start")
		if err := r.Remove(ctx, id, false); err != nil {
			t.Fatal(err)
		}
	})
}

// Bad network input is refused at create, before anything exists.
func TestCNIBadInputRefusedAtCreate(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	confDir := t.TempDir()
	base := Spec{ID: "kdsbx-bad", Kernel: haltGuest(t, "bad"), Firecracker: fc, CNIConfDir: confDir}
	for _, tt := range []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"unknown network", func(s *Spec) { s.Net = []Net{{CNI: "nosuchnet"}} },
			`CNI network "nosuchnet": no conflist of that name in ` + confDir},
		{"bad port", func(s *Spec) { s.CNINetworks = []string{"x"}; s.Ports = []string{"80:http"} }, "80:http"},
		{"ports without a network", func(s *Spec) { s.Ports = []string{"8080:80"} }, "add --net slot or --net cni:NETWORK"},
		{"egress without a network", func(s *Spec) { s.Egress = "deny" }, "an egress policy needs a network"},
		{"slot and CNI mixed", func(s *Spec) { s.Net = []Net{{Slot: true}, {CNI: "x"}} }, "either a slot or CNI networks"},
		{"slot and taps mixed", func(s *Spec) { s.Net = []Net{{Slot: true}, {Auto: true}} }, "cannot be mixed"},
		{"metadata on a slot", func(s *Spec) { s.NetSlot = true; s.Metadata = "{}" }, "not served on CNI networks or slots"},
		{"bad egress default", func(s *Spec) { s.NetSlot = true; s.Egress = "maybe" }, `egress default "maybe": must be "deny" or "allow"`},
		{"invalid CIDR", func(s *Spec) { s.NetSlot = true; s.AllowEgress = []string{"10.0.0.0/33"} }, `"10.0.0.0/33"`},
		{"invalid domain", func(s *Spec) { s.NetSlot = true; s.AllowEgress = []string{"exa_mple..com"} }, `"exa_mple..com"`},
		{"domain rule on CNI", func(s *Spec) { s.CNINetworks = []string{"x"}; s.AllowEgress = []string{"example.com"} }, "domain rules need the slot's DNS forwarder"},
		{"metadata on a CNI network", func(s *Spec) { s.CNINetworks = []string{"x"}; s.Metadata = "{}" }, "not served on CNI networks"},
		{"CNI and taps mixed", func(s *Spec) { s.Net = []Net{{Auto: true}, {CNI: "x"}} }, "cannot be mixed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Net = nil
			tt.edit(&s)
			_, err := r.Create(ctx, s, CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Create: %v, want one line containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("Create: %v is not ErrInvalidSpec", err)
			}
			if list, err := r.List(ctx, ListOptions{}); err != nil || len(list) != 0 {
				t.Errorf("after the refused create: %v, %v", list, err)
			}
		})
	}
}

func TestParseNetCNI(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"cni:testnet", "testnet", false},
		{"cni:", "", true},
		{"cni:a,mac=02:00:00:00:00:01", "", true},
	} {
		n, err := ParseNet(tt.in)
		if (err != nil) != tt.wantErr || n.CNI != tt.want {
			t.Errorf("ParseNet(%q) = %+v, %v", tt.in, n, err)
		}
	}
	s := Spec{Net: []Net{{CNI: "a"}, {CNI: "b"}}}
	s.SplitNet()
	if len(s.Net) != 0 || strings.Join(s.CNINetworks, ",") != "a,b" {
		t.Errorf("SplitNet: %+v", s)
	}
}

func TestApplyNetworkKernelArg(t *testing.T) {
	rec := &record{ID: "web", Spec: formatsSpec(3, true), Network: formatsNetwork()}
	for _, tt := range []struct{ user, want string }{
		{"", "ip=10.88.0.2::10.88.0.1:255.255.255.0::eth0:off:10.88.0.1"},
		{"quiet", "ip=10.88.0.2::10.88.0.1:255.255.255.0::eth0:off:10.88.0.1 quiet"},
		{"ip=dhcp quiet", "ip=dhcp quiet"},
	} {
		cfg := vmm.Config{KernelArgs: tt.user}
		applyNetwork(rec, &cfg)
		if cfg.KernelArgs != tt.want {
			t.Errorf("kernel args over %q = %q, want %q", tt.user, cfg.KernelArgs, tt.want)
		}
		if cfg.NetNS != "/run/netns/kindling-web" || len(cfg.NetworkInterfaces) != 1 ||
			cfg.NetworkInterfaces[0].TapName != "kdtap0" || cfg.NetworkInterfaces[0].MAC != "02:00:00:00:00:03" {
			t.Errorf("config = netns %q, interfaces %+v", cfg.NetNS, cfg.NetworkInterfaces)
		}
	}
}

// A snapshot of a sandbox on a CNI network is refused at restore, before
// anything is made: its guest keeps an address a new ADD would not give.
func TestCNIRestoreRefused(t *testing.T) {
	needCNI(t)
	ctx := context.Background()
	e := newCNIEnv(t)
	r, fc := newRuntime(t, false)
	id := "kdsbx-" + hexID(t, 4)
	if _, err := r.Create(ctx, e.spec(t, id, fc), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), id, true); err != nil {
			t.Errorf("remove: %v", err)
		}
		e.checkNothingLeft(t, id, "after rm")
	})
	if _, err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snap")
	if _, err := r.Snapshot(ctx, id, snap, SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := r.Restore(ctx, snap, RestoreOptions{ID: id + "r", Firecracker: fc})
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "--net slot") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("restore: %v, want one line matching ErrNotSupported naming --net slot", err)
	}
	if _, err := r.Inspect(ctx, id+"r"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused restore left sandbox %sr: %v", id, err)
	}
	e.checkNothingLeft(t, id+"r", "after the refused restore")
}
