package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// Lists are coalesced under load, yet never stale: a list asked for after a
// create has returned shows the sandbox, however many lists run at once.
func TestListsCoalescedNeverStale(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Background lists keep the coalescer busy.
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := r.client.List(ctx, sandbox.ListOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := range 5 {
		id := fmt.Sprintf("fresh%d", i)
		spec := r.idleSpec(id)
		spec.Labels = map[string]string{"n": fmt.Sprint(i)}
		_, err := r.client.Create(ctx, spec, sandbox.CreateOptions{})
		must(t, err)
		t.Cleanup(func() { _ = r.rt.Remove(context.Background(), id, true) })
		var lwg sync.WaitGroup
		for range 4 {
			lwg.Add(1)
			go func() {
				defer lwg.Done()
				infos, err := r.client.List(ctx, sandbox.ListOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				if !slices.ContainsFunc(infos, func(in sandbox.Info) bool { return in.ID == id }) {
					t.Errorf("a list after the create of %s does not show it", id)
				}
			}()
		}
		lwg.Wait()
		// Label filters are applied to the shared list.
		infos, err := r.client.List(ctx, sandbox.ListOptions{Labels: map[string]string{"n": fmt.Sprint(i)}})
		if err != nil || len(infos) != 1 || infos[0].ID != id {
			t.Errorf("list by label n=%d: %v, %v", i, infos, err)
		}
	}
}
