package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/kindling-vm/kindling/internal/netdev"
)

// loopbackTable is the nf_tables table (family ip) of RedirectLoopback.
const loopbackTable = "kindling-loopback"

// RedirectLoopback makes every TCP connection opened inside the network
// namespace nsPath to a port of 127.0.0.0/8 land on 127.0.0.1:to instead
// (a redirect in the output hook of the namespace's nat table), where one
// listener can take them all and read each one's original destination
// with OriginalDst. Connections to port to itself are left alone.
//
// It is meant for a namespace whose own loopback serves nothing, such as
// a pod network namespace in which only the VMM runs: the containerd shim
// uses it to carry CRI's port forward (a dial of localhost:PORT in the
// pod's namespace) into the guest. Calling it again replaces the table.
func RedirectLoopback(nsPath string, to uint16) error {
	if nsPath == "" {
		return invalid("loopback redirect namespace", nsPath, "give a network namespace path; the host's own loopback is never redirected")
	}
	if to == 0 {
		return invalid("loopback redirect port", "0", "must be from 1 to 65535")
	}
	c, err := nftIn(nsPath)
	if err != nil {
		return err
	}
	defer closeNft(c)
	if old, err := c.ListTableOfFamily(loopbackTable, nftables.TableFamilyIPv4); err == nil {
		c.DelTable(old)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: loopbackTable})
	ch := c.AddChain(&nftables.Chain{Table: t, Name: "output", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	port := binaryutil.BigEndian.PutUint16(to)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
		matchOif("lo"),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
		},
		matchL4Proto(unix.IPPROTO_TCP),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: port},
			&expr.Immediate{Register: 1, Data: port},
			&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redirect loopback TCP in %s to port %d: %w", nsPath, to, err)
	}
	return nil
}

// RemoveLoopbackRedirect deletes RedirectLoopback's table from nsPath. It
// is idempotent, and a namespace that is gone is fine (the table went
// with it).
func RemoveLoopbackRedirect(nsPath string) error {
	if nsPath == "" {
		return nil
	}
	if _, err := netdev.ResolveNetNS(nsPath); err != nil {
		return nil
	}
	return deleteTable(nsPath, nftables.TableFamilyIPv4, loopbackTable)
}

// OriginalDst is the destination a redirected IPv4 TCP connection was
// opened to, before the redirect (SO_ORIGINAL_DST, from connection
// tracking).
func OriginalDst(conn *net.TCPConn) (netip.AddrPort, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var (
		mreq *unix.IPv6Mreq // 20 bytes: room for a sockaddr_in
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), syscall.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", gerr)
	}
	// A struct sockaddr_in: family, port (network order), address.
	b := mreq.Multiaddr
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("original destination: address family %d, want IPv4", fam)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
}
