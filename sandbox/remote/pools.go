package remote

import (
	"context"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
)

// Pool describes a server's warm pool of a template: paused clones kept
// ready so that a run of the template only resumes one.
type Pool struct {
	Template string `json:"template"`
	// Size is how many ready clones the pool keeps; MemoryMiB bounds their
	// guest memory (0: no bound of the pool's own).
	Size      int `json:"size"`
	MemoryMiB int `json:"memory_mib,omitempty"`
	// Ready is how many it has, holding MemoryUsedMiB of guest memory.
	Ready         int `json:"ready"`
	MemoryUsedMiB int `json:"memory_used_mib"`
	// Hits and Misses count the runs that claimed a ready clone and those
	// that found none, since the server started.
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
	// Error is the last failure to fill the pool.
	Error string `json:"error,omitempty"`
}

// Pools describes the server's warm pools.
type Pools struct {
	Pools []Pool `json:"pools"`
	// MemoryMiB bounds the guest memory of all pools' ready clones (0:
	// none); MemoryUsedMiB is what they hold.
	MemoryMiB     int `json:"memory_mib"`
	MemoryUsedMiB int `json:"memory_used_mib"`
}

func poolFromPB(p *pb.Pool) Pool {
	return Pool{Template: p.GetTemplate(), Size: int(p.GetSize()), MemoryMiB: int(p.GetMemoryMib()), Ready: int(p.GetReady()),
		MemoryUsedMiB: int(p.GetMemoryUsedMib()), Hits: p.GetHits(), Misses: p.GetMisses(), Error: p.GetError()}
}

// ListPools describes the server's warm pools.
func (c *Client) ListPools(ctx context.Context) (Pools, error) {
	res, err := call(ctx, c.pool.List, &pb.Empty{})
	if err != nil {
		return Pools{}, err
	}
	out := Pools{Pools: make([]Pool, 0, len(res.GetPools())), MemoryMiB: int(res.GetMemoryMib()), MemoryUsedMiB: int(res.GetMemoryUsedMib())}
	for _, p := range res.GetPools() {
		out.Pools = append(out.Pools, poolFromPB(p))
	}
	return out, nil
}

// SetPool creates template's warm pool or changes its size and memory
// budget (MiB, 0 for none of its own). The server keeps it across
// restarts.
func (c *Client) SetPool(ctx context.Context, template string, size, memoryMiB int) (Pool, error) {
	res, err := call(ctx, c.pool.Set, &pb.SetPoolRequest{Template: template, Size: int32(size), MemoryMib: int32(memoryMiB)})
	if err != nil {
		return Pool{}, err
	}
	return poolFromPB(res.GetPool()), nil
}

// DeletePool ends template's warm pool; its ready clones are removed.
func (c *Client) DeletePool(ctx context.Context, template string) error {
	_, err := call(ctx, c.pool.Delete, &pb.NameRequest{Name: template})
	return err
}
