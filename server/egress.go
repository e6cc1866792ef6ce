package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/sandbox"
)

// SetEgress changes a sandbox's egress policy through the runtime's
// sandbox.EgressSetter.
func (n native) SetEgress(ctx context.Context, req *connect.Request[pb.SetEgressRequest]) (*connect.Response[pb.SandboxResponse], error) {
	m := req.Msg
	if err := needID(m.GetId()); err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	ch := sandbox.EgressChange{Default: m.GetDefault(), Allow: m.GetAllow(), Revoke: m.GetRevoke(), Clear: m.GetClear()}
	// An empty change would still turn a sandbox without a policy into a
	// deny-all one: refuse it rather than guess.
	if ch.Default == "" && len(ch.Allow) == 0 && len(ch.Revoke) == 0 && !ch.Clear {
		return reply[pb.SandboxResponse](nil, fmt.Errorf("egress of sandbox %q: nothing to change: give default, allow, revoke or clear: %w", m.GetId(), sandbox.ErrInvalid))
	}
	var es sandbox.EgressSetter = n.s.rt
	in, err := es.SetEgress(ctx, m.GetId(), ch)
	if err != nil {
		return reply[pb.SandboxResponse](nil, err)
	}
	return reply(n.info(in), nil)
}
