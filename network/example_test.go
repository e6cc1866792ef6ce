package network_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/kindling-vm/kindling/network"
)

func ExampleParseRate() {
	rl, err := network.ParseRate("100Mbit,10kpps")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rl.Bandwidth.Size, rl.Bandwidth.RefillTime, rl.Ops.Size, rl.Ops.RefillTime)
	_, err = network.ParseRate("100")
	fmt.Println(err)
	// Output:
	// 1250000 100ms 1000 100ms
	// rate "100": no unit (want bit, kbit, Mbit, Gbit, B, KB, MB, GB, KiB, MiB, GiB, pps, kpps or Mpps)
}

func ExampleParsePorts() {
	ports, err := network.ParsePorts([]string{"8080:80", "5353:53/udp"})
	fmt.Println(ports, err)
	_, err = network.ParsePorts([]string{"8080:80", "8080:81"})
	fmt.Println(err)
	// Output:
	// [8080:80/tcp 5353:53/udp] <nil>
	// port "8080:81": host port 8080/tcp is also given by "8080:80"
}

func ExampleParseEgress() {
	p, err := network.ParseEgress("deny", []string{"10.0.0.0/8", "pypi.org"})
	fmt.Println(p.Default, p.CIDRs, p.Domains, err)
	fmt.Println(p.AllowsDomain("files.pypi.org"), p.AllowsDomain("example.com"))
	_, err = network.ParseEgress("deny", []string{"10.0.0.0/33"})
	fmt.Println(err)
	// Output:
	// deny [10.0.0.0/8] [pypi.org] <nil>
	// true false
	// egress rule "10.0.0.0/33": not a valid CIDR (want ADDRESS/BITS, as 10.0.0.0/8)
}

func ExampleGuestConfig_KernelIPArg() {
	g := network.GuestConfig{
		Address: network.SlotGuestAddr,
		Gateway: network.SlotGateway.Addr(),
		DNS:     []netip.Addr{network.SlotGateway.Addr()},
		MAC:     network.SlotGuestMAC,
	}
	fmt.Println(g.KernelIPArg("eth0"))
	// Output: ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1
}

// A sandbox on the CNI network "kindling" (a conflist in /etc/cni/net.d):
// attach before the VMM starts, detach on every end.
func ExampleCNI_Attach() {
	ctx := context.Background()
	var c network.CNI // defaults: /etc/cni/net.d, /opt/cni/bin:/usr/lib/cni
	rec, err := c.Attach(ctx, "sb-1", []string{"kindling"})
	if err != nil {
		log.Fatal(err) // `CNI network "kindling": no conflist of that name in /etc/cni/net.d: not found`
	}
	// Persist rec; run the VMM in rec.NetNS with tap rec.Interfaces[0].Tap,
	// guest MAC rec.Interfaces[0].Guest.MAC and this kernel argument:
	fmt.Println(rec.Interfaces[0].Guest.KernelIPArg("eth0"))
	if err := c.Detach(ctx, rec); err != nil {
		log.Print(err) // keep rec and retry (gc)
	}
}

// A long-lived process keeps slots ready for clones.
func ExamplePool() {
	ctx := context.Background()
	pool, err := network.NewPool(network.Slots{}, 8)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(ctx)
	if err := pool.Fill(ctx); err != nil {
		log.Fatal(err)
	}
	slot, err := pool.Claim(ctx) // microseconds
	if err != nil {
		log.Fatal(err)
	}
	// The clone runs in slot.NetNS on tap slot.Tap; its guest keeps
	// 172.16.0.2. The host reaches it at slot.Addr.
	defer pool.Release(ctx, slot)
	var host network.Host
	pub, err := host.Publish(ctx, "clone-1", slot.Addr, []network.PortMapping{{HostPort: 8080, GuestPort: 80, Protocol: "tcp"}})
	if err != nil {
		log.Fatal(err) // `host port 8080/tcp is in use on the host: conflict`
	}
	defer host.Unpublish(ctx, pub)
}

// Egress denied except to one CIDR and one domain, with the DNS forwarder
// that learns the domain's addresses; changed later without a restart.
func ExampleHost_ApplyEgress() {
	ctx := context.Background()
	var host network.Host
	slot, err := network.Slots{}.Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer network.Slots{}.Destroy(ctx, slot)
	p, err := network.ParseEgress("deny", []string{"10.1.0.0/16", "pypi.org"})
	if err != nil {
		log.Fatal(err)
	}
	src := network.EgressSource{Iface: slot.HostVeth}
	rec, err := host.ApplyEgress(ctx, "sb-1", src, p)
	if err != nil {
		log.Fatal(err)
	}
	defer host.RemoveEgress(ctx, rec)
	fwd, err := network.NewDNSForwarder(host, netip.MustParseAddrPort("192.0.2.53:53"), rec)
	if err != nil {
		log.Fatal(err)
	}
	l, err := network.ListenDNS(slot.NetNS, netip.AddrPortFrom(slot.Guest.DNS[0], 53))
	if err != nil {
		log.Fatal(err)
	}
	go fwd.Serve(ctx, l)

	// Later: open everything, live.
	p.Default = network.EgressAllow
	if rec, err = host.ApplyEgress(ctx, "sb-1", src, p); err != nil {
		log.Fatal(err)
	}
	fwd.SetPolicy(rec)
}
