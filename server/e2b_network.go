package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

// e2bNetwork is E2B's SandboxNetworkConfig (a create's network) and
// SandboxNetworkUpdateConfig (the body of PUT /sandboxes/{id}/network,
// which also has allow_internet_access). Of it kindlingd serves what maps
// to a sandbox's egress policy: allowOut, and a denyOut that denies
// everything.
type e2bNetwork struct {
	AllowOut []string `json:"allowOut"`
	DenyOut  []string `json:"denyOut"`
	// AllowInternetAccess is the update body's; a create has it beside
	// network.
	AllowInternetAccess *bool `json:"allow_internet_access"`
	// Settings kindlingd does not have: refused when set.
	AllowPublicTraffic *bool           `json:"allowPublicTraffic"`
	MaskRequestHost    string          `json:"maskRequestHost"`
	EgressProxy        json.RawMessage `json:"egressProxy"`
	Rules              json.RawMessage `json:"rules"`
}

// e2bEgress is an E2B request's egress settings as kindling reads them.
type e2bEgress struct {
	// denyAll: allow_internet_access false, or a denyOut of every address.
	denyAll bool
	// allow are allowOut's rules in kindling's spelling.
	allow []string
}

// set reports whether the request asks for an egress policy at all.
func (e *e2bEgress) set() bool { return e != nil && (e.denyAll || len(e.allow) > 0) }

// parseE2BEgress checks E2B's network settings (n may be nil) and
// allowInternet, before anything is done: one-line errors naming the
// setting, ErrInvalid for a bad value and ErrNotSupported for what
// kindlingd does not serve.
func parseE2BEgress(n *e2bNetwork, allowInternet *bool) (*e2bEgress, error) {
	e := &e2bEgress{denyAll: allowInternet != nil && !*allowInternet}
	if n == nil {
		return e, nil
	}
	unsupported := func(what string) error {
		return fmt.Errorf("network.%s: not supported by kindlingd: %w", what, sandbox.ErrNotSupported)
	}
	switch {
	case n.AllowPublicTraffic != nil && !*n.AllowPublicTraffic:
		return nil, unsupported("allowPublicTraffic false (sandbox URLs need no token)")
	case n.MaskRequestHost != "":
		return nil, unsupported("maskRequestHost")
	case len(n.EgressProxy) > 0 && string(n.EgressProxy) != "null":
		return nil, unsupported("egressProxy")
	case len(n.Rules) > 0 && string(n.Rules) != "null" && string(n.Rules) != "{}":
		return nil, unsupported("rules")
	}
	for _, d := range n.DenyOut {
		if d != "0.0.0.0/0" && d != "::/0" {
			return nil, fmt.Errorf("network.denyOut %q: kindlingd denies everything (0.0.0.0/0) or nothing: deny everything and list what the sandbox may reach in allowOut: %w", d, sandbox.ErrNotSupported)
		}
		e.denyAll = true
	}
	for _, a := range n.AllowOut {
		// A kindling domain rule covers the domain and its subdomains:
		// "*.example.com" is read as "example.com", which also lets the
		// apex through.
		e.allow = append(e.allow, strings.TrimPrefix(a, "*."))
	}
	if _, err := network.ParseEgress(network.EgressDeny, e.allow); err != nil {
		return nil, fmt.Errorf("network.allowOut: %w: %w", err, sandbox.ErrInvalid)
	}
	return e, nil
}

// change is the egress change that gives a sandbox whose policy's default
// is now current ("" for none) what e asks for. With replace (a network
// update) the rules replace the sandbox's and the default is what e says
// (allow unless it denies everything); otherwise (a create) the rules are
// added and the default is deny when e denies everything, else the
// template's, else allow: a create never opens more than its template
// did, beyond the destinations it lists.
func (e *e2bEgress) change(current string, replace bool) sandbox.EgressChange {
	ch := sandbox.EgressChange{Allow: e.allow, Clear: replace, Default: network.EgressAllow}
	switch {
	case e.denyAll:
		ch.Default = network.EgressDeny
	case !replace && current != "":
		ch.Default = current
	}
	return ch
}

// needSlot checks that the sandboxes of template name get a slot network:
// only those have an egress policy kindlingd can set.
func (s *Server) needSlot(name, dir string) error {
	snap, err := sandbox.ReadSnapshot(dir)
	if err != nil {
		return fmt.Errorf("template %q: %w", name, err)
	}
	if !snap.Spec.NetSlot {
		return fmt.Errorf("template %q has no slot network, so its sandboxes have no egress policy to set: make the template from a sandbox with --net slot, or leave out network and allow_internet_access false: %w", name, sandbox.ErrInvalid)
	}
	return nil
}

// templateEgress is the default of the egress policy template dir gives
// its clones ("" for none).
func templateEgress(dir string) string {
	snap, err := sandbox.ReadSnapshot(dir)
	if err != nil {
		return ""
	}
	return snap.Spec.Egress
}

// setE2BEgress gives sandbox id the egress policy an E2B request asks for.
func (s *Server) setE2BEgress(ctx context.Context, id string, ch sandbox.EgressChange) error {
	var es sandbox.EgressSetter = s.rt
	if _, err := es.SetEgress(ctx, id, ch); err != nil {
		return fmt.Errorf("sandbox %q: set its egress policy: %w", id, err)
	}
	return nil
}

// e2bSetNetwork serves PUT /sandboxes/{id}/network: the request's egress
// settings replace the sandbox's.
func (s *Server) e2bSetNetwork(w http.ResponseWriter, r *http.Request) {
	id, err := sandboxID(r)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	var body e2bNetwork
	if err := decodeBody(r, &body, false); err != nil {
		writeRuntimeError(w, err)
		return
	}
	e, err := parseE2BEgress(&body, body.AllowInternetAccess)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	if _, _, err := s.shown(r.Context(), id); err != nil {
		writeRuntimeError(w, err)
		return
	}
	if err := s.setE2BEgress(r.Context(), id, e.change("", true)); err != nil {
		writeRuntimeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// e2bNetworkView is the part of E2B's SandboxNetworkConfig a sandbox's
// description shows.
type e2bNetworkView struct {
	AllowOut []string `json:"allowOut,omitempty"`
	DenyOut  []string `json:"denyOut,omitempty"`
}

// e2bNetworkOf is the egress policy of sandbox in as E2B describes it: a
// deny policy is no internet access, a denyOut of everything and its
// rules as allowOut; an allow policy is internet access with its rules.
// Both are nil for a sandbox without a policy.
func e2bNetworkOf(in sandbox.Info) (*bool, *e2bNetworkView) {
	if in.Spec.Egress == "" {
		return nil, nil
	}
	internet := in.Spec.Egress != network.EgressDeny
	v := &e2bNetworkView{AllowOut: in.Spec.AllowEgress}
	if !internet {
		v.DenyOut = []string{"0.0.0.0/0"}
	}
	return &internet, v
}
