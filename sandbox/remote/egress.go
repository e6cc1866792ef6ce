package remote

import (
	"context"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/internal/apiconv"
	"github.com/kindling-vm/kindling/sandbox"
)

var _ sandbox.EgressSetter = (*Client)(nil)

// SetEgress changes the egress policy of a sandbox with a slot or CNI
// network on the server: at once if it runs, and in its spec. A change
// with nothing in it is refused (sandbox.ErrInvalid).
func (c *Client) SetEgress(ctx context.Context, id string, ch sandbox.EgressChange) (sandbox.Info, error) {
	res, err := call(ctx, c.sb.SetEgress, &pb.SetEgressRequest{Id: id, Default: ch.Default, Allow: ch.Allow,
		Revoke: ch.Revoke, Clear: ch.Clear})
	if err != nil {
		return sandbox.Info{}, err
	}
	return apiconv.InfoFromPB(res.GetSandbox()), nil
}
