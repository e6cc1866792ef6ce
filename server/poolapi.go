package server

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/api/kindling/v1/kindlingv1connect"
)

// poolService serves the warm pools (PoolService).
type poolService struct{ s *Server }

var _ kindlingv1connect.PoolServiceHandler = poolService{}

func (p poolService) List(context.Context, *connect.Request[pb.Empty]) (*connect.Response[pb.ListPoolsResponse], error) {
	list, used := p.s.pools.list()
	out := &pb.ListPoolsResponse{MemoryMib: int32(p.s.pools.budget), MemoryUsedMib: int32(used)}
	for _, ps := range list {
		out.Pools = append(out.Pools, poolToPB(ps))
	}
	return reply(out, nil)
}

func (p poolService) Set(ctx context.Context, req *connect.Request[pb.SetPoolRequest]) (*connect.Response[pb.PoolResponse], error) {
	m := req.Msg
	if err := needTemplate(m.GetTemplate()); err != nil {
		return reply[pb.PoolResponse](nil, err)
	}
	ps, err := p.s.pools.set(ctx, poolSetting{Template: m.GetTemplate(), Size: int(m.GetSize()), MemoryMiB: int(m.GetMemoryMib())})
	if err != nil {
		return reply[pb.PoolResponse](nil, err)
	}
	return reply(&pb.PoolResponse{Pool: poolToPB(ps)}, nil)
}

func (p poolService) Delete(ctx context.Context, req *connect.Request[pb.NameRequest]) (*connect.Response[pb.Empty], error) {
	if err := needTemplate(req.Msg.GetName()); err != nil {
		return reply[pb.Empty](nil, err)
	}
	return reply(&pb.Empty{}, p.s.pools.remove(ctx, req.Msg.GetName()))
}

func poolToPB(ps PoolStatus) *pb.Pool {
	return &pb.Pool{Template: ps.Template, Size: int32(ps.Size), MemoryMib: int32(ps.MemoryMiB), Ready: int32(ps.Ready),
		MemoryUsedMib: int32(ps.MemoryUsedMiB), Hits: ps.Hits, Misses: ps.Misses, Error: ps.Err}
}
