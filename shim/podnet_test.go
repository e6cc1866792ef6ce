package shim_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// criEnv is a containerd with the CRI plugin on, the runtime handler
// kindling and the test's images, and a CRI client.
type criEnv struct {
	*env
	rs   runtimeapi.RuntimeServiceClient
	conn *grpc.ClientConn
	ipam string // host-local's data directory
}

// testSubnet is the pod network's subnet: it lives in containerd's own
// network namespace (the bridge with it), so it touches nothing of the
// host's.
const testSubnet = "10.88.77"

// startCRI starts containerd with CRI (podNet: in a network namespace of
// its own, with a CNI network of Debian's bridge and host-local plugins,
// its bridge, IP leases and namespaces under the test's directory).
func startCRI(t *testing.T, podNet bool) *criEnv {
	t.Helper()
	return startCRIOn(t, podNet, false)
}

// startCRIOn is startCRI, with realVM as startContainerdIn takes it.
func startCRIOn(t *testing.T, podNet, realVM bool) *criEnv {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	cniConf := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		t.Fatal(err)
	}
	binDir := cniConf
	if podNet {
		binDir = "/usr/lib/cni"
		for _, p := range []string{"bridge", "host-local", "loopback"} {
			if _, err := os.Stat(filepath.Join(binDir, p)); err != nil {
				t.Skipf("skipping: CNI plugin %s not in %s (install containernetworking-plugins)", p, binDir)
			}
		}
		conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "kindling-test", "plugins": [
  {"type": "bridge", "bridge": "kdcni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}}]}`, testSubnet, filepath.Join(dir, "ipam"))
		if err := os.WriteFile(filepath.Join(cniConf, "10-kindling-test.conflist"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := startContainerdIn(t, fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "kindling"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kindling]
      runtime_type = "io.containerd.kindling.v2"
`, pauseImage, binDir, cniConf), podNet, realVM)
	img := testImageTar(t, e.dir)
	if out, serr, err := e.ctrIn("k8s.io", "image", "import", img); err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, serr)
	}
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &criEnv{env: e, rs: runtimeapi.NewRuntimeServiceClient(conn), conn: conn, ipam: filepath.Join(dir, "ipam")}
	c.waitCRI()
	return c
}

// waitCRI waits until containerd's CRI service has initialized: containerd
// answers on its socket before the CRI plugin has recovered its state, and
// until then every CRI call fails with "server is not initialized yet".
func (c *criEnv) waitCRI() {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.rs.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "not initialized") || time.Now().After(deadline) {
			t.Fatalf("containerd's CRI service: %v\n%s", err, c.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// podConfig is a pod's configuration; hostNet puts it on the node's network.
func (c *criEnv) podConfig(name string, hostNet bool) *runtimeapi.PodSandboxConfig {
	mode := runtimeapi.NamespaceMode_POD
	if hostNet {
		mode = runtimeapi.NamespaceMode_NODE
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		Hostname:     name,
		LogDirectory: filepath.Join(c.dir, "logs", name),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: mode},
		}},
	}
}

// startContainer creates and starts a container of the test image in pod.
func (c *criEnv) startContainer(ctx context.Context, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	c.t.Helper()
	if cfg.Image == nil {
		cfg.Image = &runtimeapi.ImageSpec{Image: testImage}
	}
	if cfg.LogPath == "" {
		cfg.LogPath = cfg.Metadata.Name + ".log"
	}
	cc, err := c.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: pod, Config: cfg})
	if err != nil {
		c.t.Fatalf("CreateContainer %s: %v\n%s", cfg.Metadata.Name, err, c.shimLogs())
	}
	if _, err := c.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		c.t.Fatalf("StartContainer %s: %v\n%s", cfg.Metadata.Name, err, c.shimLogs())
	}
	return cc.ContainerId
}

// removePod stops and removes a pod and its containers.
func (c *criEnv) removePod(ctx context.Context, podID string) {
	c.t.Helper()
	if _, err := c.rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		c.t.Fatalf("StopPodSandbox: %v\n%s", err, c.shimLogs())
	}
	if _, err := c.rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		c.t.Fatalf("RemovePodSandbox: %v\n%s", err, c.shimLogs())
	}
}

// netnsOf is the network namespace of process pid, as a path.
func netnsOf(pid int) string { return fmt.Sprintf("/proc/%d/ns/net", pid) }

// A pod on a CNI network: containerd's CRI plugin makes the pod's network
// namespace and runs Debian's bridge and host-local plugins in it; the
// shim joins a tap to the pod's eth0 with tc redirects, runs the VMM in
// the pod's namespace on that tap with eth0's MAC, and gives the guest the
// pod IP (kernel ip=). Where the simulated guest has a network, a server
// in a container of the pod answers at the pod IP from containerd's side
// of the bridge. Removing the pod leaves no tap, filter, namespace or
// mount.
func TestCRIPodNetwork(t *testing.T) {
	needs(t)
	testutil.CheckLeaks(t)
	c := startCRI(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pod := c.podConfig("netpod", false)
	run, err := c.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, c.shimLogs())
	}
	podID := run.PodSandboxId
	st, err := c.rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	podIP := st.GetStatus().GetNetwork().GetIp()
	if !strings.HasPrefix(podIP, testSubnet+".") {
		t.Fatalf("pod IP %q, want one of %s.0/24", podIP, testSubnet)
	}
	vmms := c.sandboxPIDs()
	if len(vmms) != 1 {
		t.Fatalf("VMMs of the pod: %d, want 1\n%s", len(vmms), c.shimLogs())
	}
	vmm := vmms[0]

	// The VMM runs in the pod's namespace: eth0 holds the pod IP, the tap
	// is beside it, and tc redirects join the two.
	podNS := netnsOf(vmm)
	h := netlinkIn(t, podNS)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("the VMM's namespace has no eth0 (not the pod's?): %v", err)
	}
	addrs, _ := h.AddrList(eth, netlink.FAMILY_V4)
	if len(addrs) == 0 || addrs[0].IP.String() != podIP {
		t.Errorf("eth0 in the VMM's namespace has %v, want the pod IP %s", addrs, podIP)
	}
	tap, err := h.LinkByName("kdtap0")
	if err != nil {
		t.Fatalf("no tap kdtap0 in the pod's namespace: %v", err)
	}
	if tap.Type() != "tuntap" || tap.Attrs().MTU != eth.Attrs().MTU {
		t.Errorf("kdtap0: type %s, MTU %d; want a tap with eth0's MTU %d", tap.Type(), tap.Attrs().MTU, eth.Attrs().MTU)
	}
	redirects := func(from, to netlink.Link) int {
		fs, err := h.FilterList(from, netlink.HANDLE_INGRESS)
		if err != nil {
			t.Fatalf("filters of %s: %v", from.Attrs().Name, err)
		}
		n := 0
		for _, f := range fs {
			u, ok := f.(*netlink.U32)
			if !ok {
				continue
			}
			for _, a := range u.Actions {
				if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == to.Attrs().Index && m.MirredAction == netlink.TCA_EGRESS_REDIR {
					n++
				}
			}
		}
		return n
	}
	if n := redirects(eth, tap); n != 1 {
		t.Errorf("redirects eth0 → kdtap0: %d, want 1", n)
	}
	if n := redirects(tap, eth); n != 2 {
		t.Errorf("redirects kdtap0 → eth0: %d, want 2 (ARP, and IPv4 from the pod IP)", n)
	}

	// The VM was given eth0's MAC on the tap and the pod IP to configure.
	rt, err := sandbox.Open(c.shimRoot)
	if err != nil {
		t.Fatal(err)
	}
	list, err := rt.List(ctx, sandbox.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("sandboxes: %v, %v; want the pod's", list, err)
	}
	in, err := rt.Inspect(ctx, list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Taps) != 1 || in.Taps[0].Name != "kdtap0" || in.Taps[0].MAC != eth.Attrs().HardwareAddr.String() {
		t.Errorf("the VM's taps %+v, want kdtap0 with eth0's MAC %s", in.Taps, eth.Attrs().HardwareAddr)
	}
	if want := "ip=" + podIP + "::" + testSubnet + ".1:255.255.255.0::eth0:off"; !strings.Contains(in.Spec.KernelArgs, want) {
		t.Errorf("kernel args %q, want %q", in.Spec.KernelArgs, want)
	}

	// The guest's side: a server in the pod answers at the pod IP.
	t.Run("guest", func(t *testing.T) {
		srv := c.startContainer(ctx, podID, pod, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "srv"},
			Command:  []string{"/bin/app", "serve", ":8080", "hello from the pod"},
		})
		ex, err := c.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: srv, Cmd: []string{"/bin/app", "ifaces"}, Timeout: 30})
		if err != nil {
			t.Fatalf("ExecSync ifaces: %v", err)
		}
		if !strings.Contains(string(ex.Stdout), "eth0") {
			t.Fatalf("the simulated guest has no network interface (%q): the fake Firecracker wires its guest to the VM's tap", ex.Stdout)
		}
		if !strings.Contains(string(ex.Stdout), podIP+"/24") {
			t.Errorf("guest interfaces %q, want eth0 with %s/24", ex.Stdout, podIP)
		}
		// From containerd's namespace, the other side of the pod's bridge.
		var got string
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err = fetchIn(netnsOf(c.cmd.Process.Pid), podIP+":8080")
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || got != "hello from the pod" {
			t.Errorf("fetch %s:8080 from the node = %q, %v; want the pod's server\n%s", podIP, got, err, c.shimLogs())
		}
	})

	c.removePod(ctx, podID)
	c.conn.Close()
	if _, err := os.Stat(podNS); err == nil {
		t.Errorf("the VMM %d still runs after RemovePodSandbox", vmm)
	}
	c.stop()
	auditLeaksNS(t, c.env, "k8s.io", podID)
}

func netlinkIn(t *testing.T, nsPath string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatalf("namespace %s: %v", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// fetchIn connects from namespace ns to addr and reads what it writes.
func fetchIn(ns, addr string) (string, error) {
	var conn net.Conn
	err := netdev.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	var b bytes.Buffer
	_, err = io.Copy(&b, conn)
	return b.String(), err
}
