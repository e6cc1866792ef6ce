package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// slotAgentTemplate makes template name from a simulated guest running
// the agent on a slot of the namespace nsName (the source is removed).
func slotAgentTemplate(t *testing.T, r *rig, name, nsName string) {
	t.Helper()
	testutil.NeedSimulatedGuest(t)
	ctx := context.Background()
	src := "kdsrv-" + randID(t, 4)
	_, err := r.rt.Create(ctx, sandbox.Spec{ID: src, Kernel: haltGuest(t, emulatedMark), KernelArgs: testutil.AgentBootArgs,
		Firecracker: r.fc, Rootfs: &sandbox.Disk{Path: testutil.AgentRootfs(t, testutil.AgentRootOptions{})}, MemoryMiB: 64,
		VsockCID: 3, NetNS: nsName, Net: []sandbox.Net{{Slot: true}}}, sandbox.CreateOptions{})
	must(t, err)
	defer func() { must(t, r.rt.Remove(context.Background(), src, true)) }()
	in, err := r.rt.Start(ctx, src)
	must(t, err)
	c, err := agent.New(agent.Config{VsockPath: in.VsockSocket})
	must(t, err)
	defer c.Close()
	waitFor(t, "the agent", func() bool { return c.Health(ctx) == nil })
	_, err = r.tpl.Create(ctx, name, src, template.Options{Stop: true})
	must(t, err)
	t.Cleanup(func() {
		if err := r.tpl.Remove(context.Background(), name, true); err != nil {
			t.Errorf("remove template: %v", err)
		}
	})
}

// egressOf is sandbox id's egress policy in force, as the server's
// runtime sees it.
func egressOf(t *testing.T, r *rig, id string) (def string, cidrs, domains []string) {
	t.Helper()
	in, err := r.rt.Inspect(context.Background(), id)
	must(t, err)
	if in.Network == nil || in.Network.Egress == nil {
		t.Fatalf("sandbox %s has no egress policy in force (network %+v)", id, in.Network)
	}
	e := in.Network.Egress
	for _, c := range e.CIDRs {
		cidrs = append(cidrs, c.String())
	}
	return e.Default, cidrs, e.Domains
}

// E2B's network settings on a template with a slot network: a create's
// allow_internet_access and network.allowOut/denyOut become the clone's
// egress policy (a fresh clone and a warm pool's), and PUT
// /sandboxes/{id}/network replaces it.
func TestE2BNetwork(t *testing.T) {
	requireNet(t)
	testutil.NeedSimulatedGuest(t)
	nsName, _ := hostNS(t)
	// Slots need no tap override; the fake plays 1.16, whose vsock
	// override on load the clones use (TestE2BSDK plays 1.7.0, without).
	t.Setenv("FAKEFC", `{"version":"1.16.0"}`)
	r := newRig(t, server.Config{})
	slotAgentTemplate(t, r, "slot", nsName)
	ctx := context.Background()

	create := func(body string) string {
		t.Helper()
		status, m := do(t, r, "POST", "/sandboxes", testKey, body)
		if status != http.StatusCreated {
			t.Fatalf("create %s: status %d: %v", body, status, m)
		}
		id, _ := m["sandboxID"].(string)
		t.Cleanup(func() {
			if err := r.rt.Remove(context.Background(), id, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("remove %s: %v", id, err)
			}
		})
		return id
	}
	check := func(id, wantDef string, wantCIDRs, wantDomains []string) {
		t.Helper()
		def, cidrs, domains := egressOf(t, r, id)
		if def != wantDef || !slices.Equal(cidrs, wantCIDRs) || !slices.Equal(domains, wantDomains) {
			t.Errorf("egress of %s: %s %v %v, want %s %v %v", id, def, cidrs, domains, wantDef, wantCIDRs, wantDomains)
		}
	}

	id := create(`{"templateID":"slot","allow_internet_access":false,"network":{"allowOut":["10.9.0.0/16","*.example.com"]}}`)
	check(id, "deny", []string{"10.9.0.0/16"}, []string{"example.com"})
	status, m := do(t, r, "GET", "/sandboxes/"+id, testKey, "")
	if got := fmt.Sprint(m["allowInternetAccess"], " ", m["network"]); status != http.StatusOK ||
		got != "false map[allowOut:[10.9.0.0/16 example.com] denyOut:[0.0.0.0/0]]" {
		t.Errorf("GET /sandboxes/%s: status %d, network %s", id, status, got)
	}

	t.Run("update replaces the policy", func(t *testing.T) {
		if status, m := do(t, r, "PUT", "/sandboxes/"+id+"/network", testKey, `{"allowOut":["10.10.0.0/16"]}`); status != http.StatusNoContent {
			t.Fatalf("status %d: %v", status, m)
		}
		// Omitted fields are cleared: no deny, so E2B's default (allow).
		check(id, "allow", []string{"10.10.0.0/16"}, nil)
		if status, m := do(t, r, "PUT", "/sandboxes/"+id+"/network", testKey, `{"allow_internet_access":false}`); status != http.StatusNoContent {
			t.Fatalf("status %d: %v", status, m)
		}
		check(id, "deny", nil, nil)
	})
	t.Run("a refused update changes nothing", func(t *testing.T) {
		for _, body := range []string{`{"denyOut":["10.0.0.0/8"]}`, `{"allowOut":["10.0.0.0/99"]}`, `{"egressProxy":{"address":"x"}}`} {
			status, m := do(t, r, "PUT", "/sandboxes/"+id+"/network", testKey, body)
			if status != http.StatusBadRequest {
				t.Errorf("update %s: status %d, want 400 (%v)", body, status, m)
			}
		}
		check(id, "deny", nil, nil)
	})
	t.Run("a create without settings keeps the template's", func(t *testing.T) {
		other := create(`{"templateID":"slot","allow_internet_access":true}`)
		in, err := r.rt.Inspect(ctx, other)
		must(t, err)
		if in.Network == nil || in.Network.Egress != nil {
			t.Errorf("a clone of an open template: network %+v", in.Network)
		}
	})
	t.Run("warm pool", func(t *testing.T) {
		_, err := r.client.SetPool(ctx, "slot", 1, 0)
		must(t, err)
		t.Cleanup(func() { dropPool(t, r, "slot") })
		waitFor(t, "a paused clone in the pool", func() bool { return poolReady(t, r, "slot", 1) })
		pooled := create(`{"templateID":"slot","network":{"denyOut":["0.0.0.0/0"],"allowOut":["10.11.0.1"]}}`)
		check(pooled, "deny", []string{"10.11.0.1/32"}, nil)
		req, _ := http.NewRequest("GET", r.url+"/metrics", nil)
		req.Header.Set("X-API-Key", testKey)
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := `kindlingd_pool_claims_total{result="hit",template="slot"} 1`; !strings.Contains(string(b), want) {
			t.Errorf("the create did not claim the pool's clone: metrics lack %s", want)
		}
	})
}

// Network settings for a template without a slot network, or settings
// kindlingd does not serve, are refused before anything is cloned.
func TestE2BNetworkRefused(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	spec := r.idleSpec("plain-src")
	spec.VsockCID = 3
	_, err := r.client.Create(ctx, spec, sandbox.CreateOptions{})
	must(t, err)
	_, err = r.client.Start(ctx, "plain-src")
	must(t, err)
	_, err = r.client.CreateTemplate(ctx, "plain", "plain-src", true)
	must(t, err)
	must(t, r.client.Remove(ctx, "plain-src", true))

	tests := []struct {
		name, body string
		code, says string
	}{
		{"no slot", `{"templateID":"plain","allow_internet_access":false}`, "bad_request", "--net slot"},
		{"no slot, allowOut", `{"templateID":"plain","network":{"allowOut":["10.0.0.0/8"]}}`, "bad_request", "--net slot"},
		{"deny a CIDR", `{"templateID":"plain","network":{"denyOut":["10.0.0.0/8"]}}`, "not_supported", `"10.0.0.0/8"`},
		{"bad allowOut", `{"templateID":"plain","network":{"allowOut":["10.0.0.0/99"]}}`, "bad_request", `"10.0.0.0/99"`},
		{"egress proxy", `{"templateID":"plain","network":{"egressProxy":{"address":"10.0.0.1:8080"}}}`, "not_supported", "egressProxy"},
		{"masked host", `{"templateID":"plain","network":{"maskRequestHost":"x.example"}}`, "not_supported", "maskRequestHost"},
		{"private URLs", `{"templateID":"plain","network":{"allowPublicTraffic":false}}`, "not_supported", "allowPublicTraffic"},
		{"transform rules", `{"templateID":"plain","network":{"rules":{"example.com":[{}]}}}`, "not_supported", "rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := do(t, r, "POST", "/sandboxes", testKey, tt.body)
			msg, _ := m["message"].(string)
			if status != http.StatusBadRequest || m["error_code"] != tt.code || !strings.Contains(msg, tt.says) {
				t.Errorf("create %s: status %d, %v; want 400 %s saying %s", tt.body, status, m, tt.code, tt.says)
			}
		})
	}
	if status, m := do(t, r, "PUT", "/sandboxes/nosuch/network", testKey, `{"allowOut":["10.0.0.0/8"]}`); status != http.StatusNotFound {
		t.Errorf("update of a missing sandbox: status %d, %v", status, m)
	}
	if status, m := do(t, r, "PUT", "/sandboxes/nosuch/network", testKey, ``); status != http.StatusBadRequest {
		t.Errorf("update without a body: status %d, %v", status, m)
	}
	// Nothing was cloned.
	tpl, err := r.client.Template(ctx, "plain")
	must(t, err)
	if len(tpl.Clones) != 0 {
		t.Errorf("clones after refused creates: %v", tpl.Clones)
	}
	must(t, r.client.RemoveTemplate(ctx, "plain", false))
}
