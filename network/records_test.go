package network

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The records the runtime persists keep their JSON shape: a change shows
// up as a diff of testdata/records.json (rewrite it with -update, and say
// in the commit how old records are read).
func TestRecordsGolden(t *testing.T) {
	gw := netip.MustParseAddr("10.213.5.1")
	// A real record has a CNI attachment or a slot, not both; both are
	// here to pin both shapes.
	records := Record{
		Version: RecordVersion, SandboxID: "sb-1",
		CNI: &CNIAttachment{SandboxID: "sb-1", NetNS: "/run/netns/kindling-sb-1", Interfaces: []CNIInterface{{
			Network: "kindling", IfName: "eth0", Tap: "kdtap0",
			ConfList: json.RawMessage(`{"cniVersion":"1.0.0","name":"kindling","plugins":[{"type":"bridge"}]}`),
			Guest: GuestConfig{Address: netip.MustParsePrefix("10.213.5.7/24"), Gateway: gw,
				DNS: []netip.Addr{gw}, MAC: "0a:58:0a:d5:05:07", MTU: 1500},
		}}},
		Slot: &SlotRecord{Index: 3, NetNS: "/run/netns/kdslot-3", Tap: SlotTap, HostVeth: "kdh3",
			Addr: netip.MustParseAddr("198.19.0.14"),
			Guest: GuestConfig{Address: SlotGuestAddr, Gateway: SlotGateway.Addr(),
				DNS: []netip.Addr{SlotGateway.Addr()}, MAC: SlotGuestMAC}},
		Ports: &Published{SandboxID: "sb-1", Table: portsTableName("sb-1"), Target: netip.MustParseAddr("198.19.0.14"),
			Ports: []PortMapping{{HostPort: 8080, GuestPort: 80, Protocol: "tcp"}}},
		Egress: &EgressRecord{SandboxID: "sb-1", Table: egressTableName("sb-1"), Source: EgressSource{Iface: "kdh3"},
			Policy: EgressPolicy{Default: EgressDeny, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				Domains: []string{"example.com"}}},
	}
	got, err := json.MarshalIndent(records, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "records.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("records changed shape:\n%s\nwant:\n%s", got, want)
	}
	// And they read back as they were.
	back := records
	back.CNI, back.Slot, back.Ports, back.Egress = nil, nil, nil, nil
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Slot, records.Slot) || !reflect.DeepEqual(back.Ports, records.Ports) ||
		!reflect.DeepEqual(back.Egress, records.Egress) || back.CNI.Interfaces[0].Guest.Address != records.CNI.Interfaces[0].Guest.Address {
		t.Errorf("records do not read back: %+v", back)
	}
}
