package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// poolClones lists the clones of template name's pool, by status.
func poolClones(t *testing.T, r *rig, name string) map[sandbox.Status][]string {
	t.Helper()
	infos, err := r.rt.List(context.Background(), sandbox.ListOptions{Labels: map[string]string{server.PoolLabel: name}})
	must(t, err)
	out := map[sandbox.Status][]string{}
	for _, in := range infos {
		out[in.Status] = append(out[in.Status], in.ID)
	}
	return out
}

// poolReady reports whether template name's pool has n clones paused on
// disk and counted ready by the server: the filler counts a clone ready
// only after its pause is recorded, so a claim made as soon as the disk
// shows it paused could still miss.
func poolReady(t *testing.T, r *rig, name string, n int) bool {
	t.Helper()
	if len(poolClones(t, r, name)[sandbox.Paused]) != n {
		return false
	}
	ps, err := r.client.ListPools(context.Background())
	if err != nil {
		return false
	}
	for _, p := range ps.Pools {
		if p.Template == name {
			return p.Ready == n
		}
	}
	return false
}

// makeTemplate makes template name from an idle demo sandbox.
func makeTemplate(t *testing.T, r *rig, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := r.client.Create(ctx, r.idleSpec(name+"-src"), sandbox.CreateOptions{})
	must(t, err)
	_, err = r.client.Start(ctx, name+"-src")
	must(t, err)
	_, err = r.client.CreateTemplate(ctx, name, name+"-src", true)
	must(t, err)
	must(t, r.client.Remove(ctx, name+"-src", true))
}

// dropPool stops the server's fillers and removes the pool's clones.
func dropPool(t *testing.T, r *rig, name string) {
	r.srv.Close()
	ctx := context.Background()
	for _, ids := range poolClones(t, r, name) {
		for _, id := range ids {
			must(t, r.rt.Remove(ctx, id, true))
		}
	}
}

// A warm pool keeps clones paused; a run claims one (only a resume) and
// the pool refills in the background.
func TestWarmPool(t *testing.T) { testWarmPool(t, false) }

// The same against the real Firecracker of $KINDLING_FIRECRACKER: a claim
// (resume) against a clone without the pool (snapshot load), timed.
func TestWarmPoolReal(t *testing.T) { testWarmPool(t, true) }

func testWarmPool(t *testing.T, real bool) {
	if real {
		cfgFirecracker = testutil.Firecracker(t)
	}
	r := newRig(t, server.Config{Pools: map[string]int{"base": 2}})
	makeTemplate(t, r, "base")
	t.Cleanup(func() {
		dropPool(t, r, "base")
		must(t, r.tpl.Remove(context.Background(), "base", true))
	})
	waitFor(t, "two paused clones in the pool", func() bool { return poolReady(t, r, "base", 2) })

	ctx := context.Background()
	start := time.Now()
	in, err := r.client.RunTemplate(ctx, "base", template.CloneOptions{})
	must(t, err)
	claim := time.Since(start)
	if in.Status != sandbox.Running || in.Spec.Labels[server.PoolLabel] != "base" {
		t.Fatalf("claimed %+v", in)
	}
	if got, _ := r.rt.Inspect(ctx, in.ID); got.Status != sandbox.Running {
		t.Fatalf("claimed clone is %s", got.Status)
	}
	waitFor(t, "the pool to refill", func() bool { return poolReady(t, r, "base", 2) })
	// A run with labels of its own is not served from the pool.
	start = time.Now()
	other, err := r.client.RunTemplate(ctx, "base", template.CloneOptions{Labels: map[string]string{"mine": "yes"}})
	must(t, err)
	unpooled := time.Since(start)
	if other.Spec.Labels[server.PoolLabel] != "" {
		t.Errorf("a run with labels came from the pool: %+v", other.Spec.Labels)
	}
	must(t, r.client.Remove(ctx, other.ID, true))
	must(t, r.client.Remove(ctx, in.ID, true))
	t.Logf("through the native API: claim from the pool %v, clone without the pool %v", claim, unpooled)

	req, _ := http.NewRequest("GET", r.url+"/metrics", nil)
	req.Header.Set("X-API-Key", testKey)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`kindlingd_pool_claims_total{result="hit",template="base"} 1`, `kindlingd_pool_ready{template="base"} 2`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The E2B API does not show the pool's ready clones.
	if status, _ := do(t, r, "GET", "/sandboxes/"+poolClones(t, r, "base")[sandbox.Paused][0], testKey, ""); status != 404 {
		t.Errorf("E2B get of a ready clone: %d", status)
	}
}

// The memory budget bounds the pools: here room for one clone only.
func TestWarmPoolBudget(t *testing.T) {
	r := newRig(t, server.Config{Pools: map[string]int{"small": 3}, PoolMemoryMiB: 200})
	makeTemplate(t, r, "small") // the demo guest has 128 MiB
	t.Cleanup(func() {
		dropPool(t, r, "small")
		must(t, r.tpl.Remove(context.Background(), "small", true))
	})
	waitFor(t, "one paused clone in the pool", func() bool { return poolReady(t, r, "small", 1) })
	time.Sleep(300 * time.Millisecond)
	if n := len(poolClones(t, r, "small")[sandbox.Paused]); n != 1 {
		t.Errorf("%d clones within a budget for one", n)
	}
}

// The pools in the native API: set, list with counters, resize, a budget
// of the pool's own, kept across a restart, delete.
func TestPoolAPI(t *testing.T) {
	r := newRig(t, server.Config{})
	makeTemplate(t, r, "base")
	t.Cleanup(func() {
		dropPool(t, r, "base")
		must(t, r.tpl.Remove(context.Background(), "base", true))
	})
	ctx := context.Background()
	c := r.client
	pool := func() remote.Pool {
		t.Helper()
		ps, err := c.ListPools(ctx)
		must(t, err)
		if len(ps.Pools) != 1 {
			t.Fatalf("pools: %+v", ps)
		}
		return ps.Pools[0]
	}
	p, err := c.SetPool(ctx, "base", 2, 0)
	must(t, err)
	if p.Template != "base" || p.Size != 2 {
		t.Errorf("set: %+v", p)
	}
	waitFor(t, "two ready clones", func() bool { return pool().Ready == 2 })
	if p := pool(); p.MemoryUsedMiB != 2*128 {
		t.Errorf("two demo clones hold %d MiB, want 256", p.MemoryUsedMiB)
	}
	in, err := c.RunTemplate(ctx, "base", template.CloneOptions{})
	must(t, err)
	must(t, c.Remove(ctx, in.ID, true))
	if p := pool(); p.Hits != 1 || p.Misses != 0 {
		t.Errorf("after a claim: %+v", p)
	}
	waitFor(t, "the pool to refill", func() bool { return poolReady(t, r, "base", 2) })

	// Smaller: the clones beyond the size go at once.
	_, err = c.SetPool(ctx, "base", 1, 0)
	must(t, err)
	if n := len(poolClones(t, r, "base")[sandbox.Paused]); n != 1 || pool().Ready != 1 {
		t.Errorf("after resizing to 1: %d paused clones, %+v", n, pool())
	}
	// A budget of the pool's own: 200 MiB holds one 128 MiB clone of 3.
	_, err = c.SetPool(ctx, "base", 3, 200)
	must(t, err)
	time.Sleep(300 * time.Millisecond)
	if p := pool(); p.Ready != 1 || p.MemoryMiB != 200 {
		t.Errorf("within 200 MiB: %+v", p)
	}

	// A restarted server on the same root has the pool and its clone.
	srv2, err := server.New(ctx, server.Config{Runtime: r.rt, Templates: r.tpl})
	must(t, err)
	c2 := clientFor(t, serve(t, srv2.Handler(true)))
	ps, err := c2.ListPools(ctx)
	if err != nil || len(ps.Pools) != 1 || ps.Pools[0].Size != 3 || ps.Pools[0].MemoryMiB != 200 || ps.Pools[0].Ready != 1 {
		t.Errorf("after a restart: %+v, %v", ps, err)
	}
	srv2.Close()

	for _, tc := range []struct {
		name      string
		tpl       string
		size, mem int
		want      error
	}{
		{"missing template", "nosuch", 1, 0, sandbox.ErrNotFound},
		{"negative size", "base", -1, 0, sandbox.ErrInvalid},
		{"too big", "base", server.MaxPoolSize + 1, 0, sandbox.ErrInvalid},
		{"negative budget", "base", 1, -5, sandbox.ErrInvalid},
		{"no name", "", 1, 0, sandbox.ErrInvalid},
	} {
		if _, err := c.SetPool(ctx, tc.tpl, tc.size, tc.mem); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	must(t, c.DeletePool(ctx, "base"))
	if n := len(poolClones(t, r, "base")[sandbox.Paused]); n != 0 {
		t.Errorf("%d ready clones left after delete", n)
	}
	if ps, err := c.ListPools(ctx); err != nil || len(ps.Pools) != 0 {
		t.Errorf("after delete: %+v, %v", ps, err)
	}
	if err := c.DeletePool(ctx, "base"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("delete again: %v, want ErrNotFound", err)
	}
}
