package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// PortMapping publishes a guest port on the host.
type PortMapping struct {
	HostPort  uint16 `json:"host_port"`
	GuestPort uint16 `json:"guest_port"`
	Protocol  string `json:"protocol"` // "tcp" or "udp"
}

func (m PortMapping) String() string {
	return fmt.Sprintf("%d:%d/%s", m.HostPort, m.GuestPort, m.Protocol)
}

// ParsePort parses HOSTPORT:GUESTPORT[/tcp|/udp] (tcp when left out).
// Errors are *InvalidError.
func ParsePort(spec string) (PortMapping, error) {
	const want = "want HOSTPORT:GUESTPORT[/tcp|/udp], as 8080:80"
	m := PortMapping{Protocol: "tcp"}
	ports, proto, hasProto := strings.Cut(spec, "/")
	if hasProto {
		switch proto {
		case "tcp", "udp":
			m.Protocol = proto
		default:
			return m, invalid("port", spec, "protocol must be tcp or udp")
		}
	}
	hp, gp, ok := strings.Cut(ports, ":")
	if !ok {
		return m, invalid("port", spec, want)
	}
	var err error
	if m.HostPort, err = parsePortNumber(hp); err != nil {
		return m, invalid("port", spec, "host port "+err.Error())
	}
	if m.GuestPort, err = parsePortNumber(gp); err != nil {
		return m, invalid("port", spec, "guest port "+err.Error())
	}
	return m, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("must be a number from 1 to 65535")
	}
	return uint16(n), nil
}

// ParsePorts parses each spec and refuses one host port given twice.
func ParsePorts(specs []string) ([]PortMapping, error) {
	var out []PortMapping
	seen := map[string]string{}
	for _, s := range specs {
		m, err := ParsePort(s)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("%d/%s", m.HostPort, m.Protocol)
		if prev, ok := seen[key]; ok {
			return nil, invalid("port", s, fmt.Sprintf("host port %s is also given by %q", key, prev))
		}
		seen[key] = s
		out = append(out, m)
	}
	return out, nil
}

// Published records a sandbox's published ports; the runtime persists it
// and hands it to Unpublish.
type Published struct {
	SandboxID string        `json:"sandbox_id"`
	Table     string        `json:"table"`  // the ip-family nf_tables table in the host namespace
	Target    netip.Addr    `json:"target"` // where the host ports lead
	Ports     []PortMapping `json:"ports"`
}

const portsLock = "ports.lock"

// Publish makes the host forward each host port to target (a slot's Addr,
// or a CNI guest address) at the guest port: a table with DNAT in the
// prerouting and output hooks for traffic to the host's own addresses. For
// a slot that includes 127.0.0.0/8: its host veth gets route_localnet and
// connections from loopback are masqueraded. Other interfaces (a CNI
// bridge) do not get route_localnet, which would let their other peers
// reach the host's loopback services; publish to them is reached at the
// host's other addresses.
//
// Before creating anything it refuses, with an error matching ErrConflict,
// a host port another sandbox has published and one a process on the host
// has bound. Publishing again for the same sandbox replaces its ports.
func (h Host) Publish(ctx context.Context, sandboxID string, target netip.Addr, ports []PortMapping) (*Published, error) {
	if err := ValidateID(sandboxID); err != nil {
		return nil, fmt.Errorf("publish ports: %w", err)
	}
	if !target.Is4() {
		return nil, invalid("publish target", target.String(), "must be an IPv4 address")
	}
	if len(ports) == 0 {
		return nil, invalid("ports of sandbox", sandboxID, "none given")
	}
	unlock, err := h.lock(ctx, portsLock)
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := nftIn(h.NetNS)
	if err != nil {
		return nil, err
	}
	defer closeNft(c)
	rec, err := h.queuePublish(c, sandboxID, target, ports)
	if err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("publish ports of sandbox %q: %w", sandboxID, err)
	}
	return rec, nil
}

// queuePublish checks the ports and queues the sandbox's port table on c;
// the caller holds the ports lock and flushes c.
func (h Host) queuePublish(c *nftables.Conn, sandboxID string, target netip.Addr, ports []PortMapping) (*Published, error) {
	rec := &Published{SandboxID: sandboxID, Table: portsTableName(sandboxID), Target: target, Ports: ports}
	taken, err := publishedPorts(c, rec.Table)
	if err != nil {
		return nil, err
	}
	for _, m := range ports {
		key := fmt.Sprintf("%d/%s", m.HostPort, m.Protocol)
		if owner, ok := taken[key]; ok {
			return nil, fmt.Errorf("host port %s is already published by sandbox %q: %w", key, owner, ErrConflict)
		}
		if err := h.portFree(m); err != nil {
			return nil, err
		}
	}
	if err := h.allowLocalnet(target); err != nil {
		return nil, err
	}
	if old, err := c.ListTableOfFamily(rec.Table, nftables.TableFamilyIPv4); err == nil {
		c.DelTable(old)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: rec.Table})
	for _, proto := range []string{"tcp", "udp"} {
		s := &nftables.Set{Table: t, Name: proto + "_ports", KeyType: nftables.TypeInetService}
		var elems []nftables.SetElement
		for _, m := range ports {
			if m.Protocol == proto {
				elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(m.HostPort), Comment: sandboxID})
			}
		}
		if err := c.AddSet(s, elems); err != nil {
			return nil, fmt.Errorf("publish ports: set %s: %w", s.Name, err)
		}
	}
	for _, hook := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}} {
		ch := c.AddChain(&nftables.Chain{Table: t, Name: hook.name, Type: nftables.ChainTypeNAT,
			Hooknum: hook.hook, Priority: nftables.ChainPriorityNATDest})
		for _, m := range ports {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
				matchLocalDaddr(), matchL4Proto(protoNumber(m.Protocol)), matchDport(m.HostPort),
				[]expr.Any{
					&expr.Immediate{Register: 1, Data: target.AsSlice()},
					&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(m.GuestPort)},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
				})})
		}
	}
	post := c.AddChain(&nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
		},
		matchIPDaddr(target),
		[]expr.Any{&expr.Masq{}})})
	return rec, nil
}

// Unpublish deletes the sandbox's port table. It is idempotent.
func (h Host) Unpublish(ctx context.Context, rec *Published) error {
	if rec == nil {
		return nil
	}
	return deleteTable(h.NetNS, nftables.TableFamilyIPv4, rec.Table)
}

// deleteTable deletes a table if it exists.
func deleteTable(ns string, family nftables.TableFamily, name string) error {
	c, err := nftIn(ns)
	if err != nil {
		return err
	}
	defer closeNft(c)
	tables, err := c.ListTablesOfFamily(family)
	if err != nil {
		return fmt.Errorf("delete table %s: %w", name, err)
	}
	for _, t := range tables {
		if t.Name == name {
			c.DelTable(t)
			if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete table %s: %w", name, err)
			}
		}
	}
	return nil
}

// publishedPorts maps "PORT/PROTO" to the sandbox ID for every port in
// kindling's port tables except skip.
func publishedPorts(c *nftables.Conn, skip string) (map[string]string, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	out := map[string]string{}
	for _, t := range tables {
		if !strings.HasPrefix(t.Name, portsTablePrefix) || t.Name == skip {
			continue
		}
		for _, proto := range []string{"tcp", "udp"} {
			s, err := c.GetSetByName(t, proto+"_ports")
			if err != nil {
				continue // removed meanwhile
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				continue
			}
			for _, e := range elems {
				if len(e.Key) == 2 {
					owner := e.Comment
					if owner == "" {
						owner = t.Name
					}
					out[fmt.Sprintf("%d/%s", binaryutil.BigEndian.Uint16(e.Key), proto)] = owner
				}
			}
		}
	}
	return out, nil
}

// portFree checks that no process in the host namespace has bound the port
// by binding it for a moment.
func (h Host) portFree(m PortMapping) error {
	return h.do(func() error {
		addr := fmt.Sprintf(":%d", m.HostPort)
		var err error
		if m.Protocol == "udp" {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", addr); err == nil {
				pc.Close()
			}
		} else {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err == nil {
				ln.Close()
			}
		}
		if errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("host port %d/%s is in use on the host: %w", m.HostPort, m.Protocol, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("host port %d/%s: %w", m.HostPort, m.Protocol, err)
		}
		return nil
	})
}

// allowLocalnet sets route_localnet on the interface towards target when
// it is a slot's veth (whose only peer is kindling's own slot namespace),
// so connections to 127.0.0.1:HOSTPORT can be sent there after DNAT.
func (h Host) allowLocalnet(target netip.Addr) error {
	nl, err := netlinkIn(h.NetNS)
	if err != nil {
		return err
	}
	defer nl.Close()
	routes, err := nl.RouteGet(net.IP(target.AsSlice()))
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("publish ports: no route to %s: %w", target, err)
	}
	link, err := nl.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return fmt.Errorf("publish ports: interface towards %s: %w", target, err)
	}
	if !isSlotVeth(link.Attrs().Name) {
		return nil
	}
	return setSysctl(h.NetNS, "net/ipv4/conf/"+link.Attrs().Name+"/route_localnet", "1")
}

// matchLocalDaddr matches packets to an address of this host.
func matchLocalDaddr() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func protoNumber(p string) byte {
	if p == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}
