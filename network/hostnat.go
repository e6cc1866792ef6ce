package network

import (
	"context"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// hostNATTable is the host-wide table that lets slots out to the world.
const hostNATTable = tablePrefix + "nat"

// EnableHostNAT lets the slots' traffic out of the host: a table
// kindling_nat in the host namespace masquerades what comes from the slot
// range and leaves through any interface other than a slot's veth (so
// slots still reach each other and the host by their own addresses), and
// forwarding is switched on. It is host-wide, not per sandbox: call it once
// when slots are in use (again is harmless); DisableHostNAT removes it.
// Without it, slots reach only what routes the slot range back to the host.
func (s Slots) EnableHostNAT(ctx context.Context) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := setSysctl(s.Host.NetNS, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	c, err := nftIn(s.Host.NetNS)
	if err != nil {
		return err
	}
	defer closeNft(c)
	if old, err := c.ListTableOfFamily(hostNATTable, nftables.TableFamilyIPv4); err == nil {
		c.DelTable(old)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: hostNATTable})
	post := c.AddChain(&nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	r := s.rangeOrDefault()
	mask := make([]byte, 4)
	for i := range r.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.Addr().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		// A prefix compare: the first bytes of the name only, as nft's
		// oifname != "kdh*".
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(slotVethPrefix)},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("enable host NAT for %s: %w", r, err)
	}
	return nil
}

// DisableHostNAT removes the table EnableHostNAT made. It is idempotent.
func (s Slots) DisableHostNAT(ctx context.Context) error {
	return deleteTable(s.Host.NetNS, nftables.TableFamilyIPv4, hostNATTable)
}
