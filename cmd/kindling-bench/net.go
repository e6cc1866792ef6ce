package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
)

// The network scenarios: what a sandbox's network costs on its start path,
// with and without the slot pool. They run in a namespace of their own
// that plays the host, so nothing on the real host changes; they need
// root (netReady).

// netPoolSize is how many slots the pool keeps ready.
const netPoolSize = 4

// netReady says why the network scenarios cannot run here, or nil.
func netReady() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the network scenarios need root (running as uid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("the network scenarios need /dev/net/tun: %w", err)
	}
	return nil
}

// netHost makes the stand-in host namespace; drop deletes it.
func netHost(e *env) (network.Host, func() error, error) {
	name := fmt.Sprintf("kb-host-%d-%d", os.Getpid(), e.seq.Add(1))
	path, err := netdev.CreateNetNS(name)
	if err != nil {
		return network.Host{}, nil, err
	}
	drop := func() error { return netdev.DeleteNetNS(name) }
	fd, err := netns.GetFromPath(path)
	if err == nil {
		var h *netlink.Handle
		if h, err = netlink.NewHandleAt(fd); err == nil {
			var lo netlink.Link
			if lo, err = h.LinkByName("lo"); err == nil {
				err = h.LinkSetUp(lo)
			}
			h.Close()
		}
		fd.Close()
	}
	if err != nil {
		return network.Host{}, nil, errors.Join(err, drop())
	}
	return network.Host{NetNS: path, LockDir: filepath.Join(e.tmp, "netlock")}, drop, nil
}

// waitReady waits (untimed) until the pool has a slot ready again.
func waitReady(ctx context.Context, p *network.Pool) {
	for p.Ready() == 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
}

// netSetup measures network.Manager.Setup of a slot, which is what the
// runtime adds to a start with --net slot: a fresh slot, or one claimed
// from a filled pool. The tear-down of each is not timed.
func netSetup(key string, pooled bool) setupFunc {
	return func(ctx context.Context, e *env) (iterFunc, func(), error) {
		h, drop, err := netHost(e)
		if err != nil {
			return nil, nil, err
		}
		m := &network.Manager{Host: h}
		var pool *network.Pool
		if pooled {
			if pool, err = network.NewPool(network.Slots{Host: h}, netPoolSize); err == nil {
				err = pool.Fill(ctx)
			}
			if err != nil {
				return nil, nil, errors.Join(err, drop())
			}
			m.Pool = pool
		}
		teardown := func() {
			if pool != nil {
				_ = pool.Close(context.Background())
			}
			_ = drop()
		}
		return func(ctx context.Context) (sample, error) {
			if pool != nil {
				waitReady(ctx, pool)
			}
			t0 := time.Now()
			rec, err := m.Setup(ctx, network.Spec{SandboxID: e.newID("n")})
			d := time.Since(t0)
			if err != nil {
				return nil, err
			}
			if err := m.Teardown(context.WithoutCancel(ctx), rec); err != nil {
				return nil, err
			}
			return sample{key: seconds(d)}, nil
		}, teardown, nil
	}
}

// netStart measures whole starts through the runtime: with no network,
// with --net slot making a fresh slot, and with --net slot given a slot
// from the pool (sandbox.WithSlotPool), in the same iteration, so their
// differences are what each kind of slot adds to a start. The runtimes
// are others than the bench's, on roots of their own; they share the
// stand-in host namespace.
func netStart(ctx context.Context, e *env) (iterFunc, func(), error) {
	h, drop, err := netHost(e)
	if err != nil {
		return nil, nil, err
	}
	pool, err := network.NewPool(network.Slots{Host: h}, netPoolSize)
	if err == nil {
		err = pool.Fill(ctx)
	}
	var rt, fresh *sandbox.Runtime
	if err == nil {
		rt, err = sandbox.Open(filepath.Join(e.tmp, "netroot"), sandbox.WithMonitorExecutable(e.kindling), sandbox.WithSlotPool(pool))
	}
	if err == nil {
		fresh, err = sandbox.Open(filepath.Join(e.tmp, "netroot-fresh"), sandbox.WithMonitorExecutable(e.kindling))
	}
	if err != nil {
		if pool != nil {
			_ = pool.Close(context.Background())
		}
		return nil, nil, errors.Join(err, drop())
	}
	teardown := func() {
		_ = pool.Close(context.Background())
		_ = drop()
	}
	start := func(ctx context.Context, rt *sandbox.Runtime, slot bool) (time.Duration, error) {
		id := e.newID("ns")
		spec := sandbox.Spec{ID: id, Kernel: e.halt, Firecracker: e.fc, WaitConsole: e.marker}
		if slot {
			spec.NetNS, spec.Net = h.NetNS, []sandbox.Net{{Slot: true}}
		}
		if _, err := rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
			return 0, err
		}
		t0 := time.Now()
		_, err := rt.Start(ctx, id)
		d := time.Since(t0)
		if rerr := rt.Remove(context.WithoutCancel(ctx), id, true); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return d, err
	}
	return func(ctx context.Context) (sample, error) {
		plain, err := start(ctx, rt, false)
		if err != nil {
			return nil, err
		}
		made, err := start(ctx, fresh, true)
		if err != nil {
			return nil, err
		}
		waitReady(ctx, pool)
		slot, err := start(ctx, rt, true)
		if err != nil {
			return nil, err
		}
		return sample{"net_start_plain": seconds(plain), "net_start_fresh": seconds(made), "net_start_pool": seconds(slot)}, nil
	}, teardown, nil
}

// netScenarios are the network scenarios; each runs on the runtime path
// only (there is no raw equivalent of a sandbox's network).
func netScenarios() []scenario {
	return []scenario{
		{key: "net_setup", paths: map[string]setupFunc{pathRuntime: netSetup("net_setup", false)}},
		{key: "net_setup_pool", paths: map[string]setupFunc{pathRuntime: netSetup("net_setup_pool", true)}},
		{key: "net_start", paths: map[string]setupFunc{pathRuntime: netStart}},
	}
}

// netMetricDefs are the network scenarios' rows.
func netMetricDefs() []metricDef {
	return []metricDef{
		{key: "net_setup", title: "network set-up of a sandbox: a fresh slot (namespace, veth, tap, NAT)", kind: kindTime},
		{key: "net_setup_pool", title: "network set-up of a sandbox: a slot from the pool", kind: kindTime,
			targets: map[string]target{pathRuntime: {absBelow, 0.001}}},
		{key: "net_start_plain", title: "start, no network (baseline of the next rows)", kind: kindTime},
		{key: "net_start_fresh", title: "start with --net slot, a fresh slot (no pool)", kind: kindTime},
		{key: "net_start_pool", title: "start with --net slot from the pool", kind: kindTime},
	}
}
