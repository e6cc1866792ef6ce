package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/gotool"
)

// The monitor runs once per sandbox for the sandbox's whole life, so what
// it links is what every sandbox costs in memory: none of the heavy parts
// of kindling may creep in.
func TestMonitorLinksNothingHeavy(t *testing.T) {
	goBin, err := gotool.Path()
	if err != nil {
		t.Skip(err)
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/kindling-vm/kindling/sandbox",
		"github.com/kindling-vm/kindling/network",
		"github.com/kindling-vm/kindling/agent",
		"github.com/kindling-vm/kindling/image",
		"github.com/kindling-vm/kindling/template",
		"connectrpc.com/connect",
		"google.golang.org/protobuf/",
		"github.com/containernetworking/cni",
		"github.com/google/nftables",
		"github.com/google/go-containerregistry",
		"github.com/spf13/cobra",
		"go.opentelemetry.io/otel",
		// The VMM driver and its HTTP client stay with the starter, which
		// configures the VMM the monitor spawns (plan version 3).
		"github.com/kindling-vm/kindling/vmm",
		"github.com/kindling-vm/kindling/fcapi",
		"github.com/kindling-vm/kindling/internal/netdev",
		"github.com/vishvananda/netlink",
		"net/http",
		"crypto/tls",
		"crypto/x509",
		// Only sandbox IDs need it, and the monitor makes none: it
		// costs ~150 KB of text and a 33 MB reservation.
		"crypto/rand",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %q", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") || strings.HasPrefix(d, "vendor/"+f+"/") {
				t.Errorf("kindling-monitor links %s", d)
			}
		}
	}
}
