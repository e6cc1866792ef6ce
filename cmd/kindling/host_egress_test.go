package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// A slot sandbox made through a server: inspect --host shows its network
// and egress policy, and 'kindling --host ... egress' changes the policy
// on the server.
func TestHostEgress(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces, veths and nf_tables rules")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: needs /dev/net/tun for the sandbox's tap: %v", err)
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := "kdcli-host-" + hex.EncodeToString(b)
	if _, err := netdev.CreateNetNS(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netdev.DeleteNetNS(ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	rt, addr := startServer(t)
	local := testutil.ShortTempDir(t)
	cli := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		all := append([]string{"--root", local, "--host", addr}, args...)
		code := exitCode(run(context.Background(), all, &out, &errb), &errb)
		return out.String(), errb.String(), code
	}
	must := func(args ...string) string {
		t.Helper()
		out, errs, code := cli(args...)
		if code != 0 {
			t.Fatalf("kindling %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	id := "kdcli-" + hex.EncodeToString(b)
	must("run", "-d", "--demo", "idle", "--name", id, "--netns", ns, "--net", "slot", "--allow-egress", "10.9.0.0/16")
	t.Cleanup(func() {
		if _, errs, code := cli("rm", "-f", id); code != 0 {
			t.Errorf("rm -f %s: %s", id, errs)
		}
	})

	var infos []sandbox.Info
	if err := json.Unmarshal([]byte(must("inspect", id)), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("inspect: %+v, %v", infos, err)
	}
	n := infos[0].Network
	if n == nil || n.Kind != "slot" || n.HostAddress == "" || n.Egress == nil || n.Egress.Default != "deny" ||
		len(n.Egress.CIDRs) != 1 || n.Egress.CIDRs[0].String() != "10.9.0.0/16" {
		t.Fatalf("inspect --host: network %+v", n)
	}
	if !infos[0].Spec.NetSlot || infos[0].Spec.Egress != "deny" {
		t.Errorf("inspect --host: net_slot %v, egress %q", infos[0].Spec.NetSlot, infos[0].Spec.Egress)
	}

	var view egressView
	if err := json.Unmarshal([]byte(must("egress", id, "--allow", "10.10.0.0/16", "--revoke", "10.9.0.0/16")), &view); err != nil {
		t.Fatal(err)
	}
	if view.ID != id || view.Default != "deny" || !slices.Equal(view.Allow, []string{"10.10.0.0/16"}) {
		t.Errorf("egress printed %+v", view)
	}
	in, err := rt.Inspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if in.Network == nil || in.Network.Egress == nil || len(in.Network.Egress.CIDRs) != 1 || in.Network.Egress.CIDRs[0].String() != "10.10.0.0/16" {
		t.Errorf("the server's sandbox after egress: %+v", in.Network)
	}
	if _, errs, code := cli("egress", id, "--allow", "10.0.0.0/99"); code == 0 || !strings.Contains(errs, `"10.0.0.0/99"`) {
		t.Errorf("egress with a bad rule: exit %d: %s", code, errs)
	}
}
