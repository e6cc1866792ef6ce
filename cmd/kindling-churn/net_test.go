package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

func needNetRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

// The network audit sees a slot left in the run's host namespace, and
// stops seeing it once it is gone.
func TestNetLeakAuditFindsSlot(t *testing.T) {
	needNetRoot(t)
	e, err := newNetEnv(config{net: netSlot}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.close(); err != nil {
			t.Error(err)
		}
	})
	base := takeHostSnapshot()
	slots := network.Slots{Host: network.Host{NetNS: e.hostPth}}
	rec, err := slots.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.saw(sandbox.Info{Network: &sandbox.NetworkInfo{Kind: "slot", NetNS: rec.NetNS}})
	leaks := strings.Join(e.leaks(base), "\n")
	if !strings.Contains(leaks, "network namespace left: kdslot-") || !strings.Contains(leaks, "link left in the host namespace: "+rec.HostVeth) {
		t.Errorf("audit with a slot left: %q", leaks)
	}
	if err := slots.Destroy(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if l := e.leaks(base); len(l) != 0 {
		t.Errorf("audit after the slot went: %q", l)
	}
}

// A few cycles on slots and on a CNI network with a published port and
// egress rules, through the library and the CLI: no failure, no leak.
func TestChurnFakeNet(t *testing.T) {
	needNetRoot(t)
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	for _, net := range []string{netSlot, netCNI} {
		t.Run(net, func(t *testing.T) {
			if net == netCNI {
				if _, err := os.Stat(cniPluginDir + "/bridge"); err != nil {
					t.Skip("needs Debian's containernetworking-plugins")
				}
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"-k", "5", "--firecracker", fc, "--memory", "16", "--net", net,
				"--publish", "18096:80", "--allow-egress", "10.9.0.0/16"}, &out, &errOut)
			t.Logf("summary:\n%s%s", out.String(), errOut.String())
			if err != nil {
				t.Fatalf("churn: %v", err)
			}
			for _, want := range []string{"library: 5 cycles (5 ok, 0 failed)", "cli:     5 cycles (5 ok, 0 failed)", "leaks:   none"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("summary lacks %q", want)
				}
			}
		})
	}
}
