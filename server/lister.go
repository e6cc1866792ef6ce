package server

import (
	"context"
	"sync"

	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/sandbox"
)

// lister coalesces the runtime's lists: a list reads and reconciles every
// sandbox's state, so under load concurrent requests share one. A request
// never gets a list that started before it arrived: while a list runs,
// the requests arriving join the next one, which starts when it ends. So
// at most one list runs and one waits, whatever the request rate, and
// every answer is as fresh as an uncoalesced one.
type lister struct {
	rt *sandbox.Runtime

	mu   sync.Mutex // guards cur and next
	cur  *listCall  // the list running; nil when none is
	next *listCall  // the list that starts when cur ends
}

// listCall is one list of the runtime and its result, shared by every
// request that joined it: callers must not change what it holds.
type listCall struct {
	done  chan struct{} // closed when infos and err are set
	infos []sandbox.Info
	err   error

	// native is the native API's description of each of infos, made
	// once, by the first native request that needs it (nativeSandboxes).
	nativeOnce sync.Once
	native     []*pb.Sandbox
}

// list returns every sandbox of the runtime, as a runtime List begun
// after the call would.
func (l *lister) list(ctx context.Context) ([]sandbox.Info, error) {
	c, err := l.join(ctx)
	if err != nil {
		return nil, err
	}
	return c.infos, c.err
}

// join returns the list call that answers a request arriving now, once it
// is done: its err says whether it failed. ctx bounds the wait.
func (l *lister) join(ctx context.Context) (*listCall, error) {
	l.mu.Lock()
	var c *listCall
	switch {
	case l.cur == nil:
		c = &listCall{done: make(chan struct{})}
		l.cur = c
		go l.run(c)
	case l.next != nil:
		c = l.next
	default:
		c = &listCall{done: make(chan struct{})}
		l.next = c
	}
	l.mu.Unlock()
	select {
	case <-c.done:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// nativeSandboxes returns c's sandboxes as the native API describes them,
// made on the first call and shared by the requests that joined c, which
// must not change them. They are made after the runtime's list, so after
// every joined request arrived: a lease changed before a request arrived
// shows in its answer.
func (c *listCall) nativeSandboxes(n native) []*pb.Sandbox {
	c.nativeOnce.Do(func() {
		c.native = make([]*pb.Sandbox, len(c.infos))
		for i, in := range c.infos {
			c.native[i] = n.info(in).Sandbox
		}
	})
	return c.native
}

// run runs c and then the lists queued behind it.
func (l *lister) run(c *listCall) {
	for c != nil {
		// Not the requests' contexts: the list is shared, and a runtime
		// list does not block.
		c.infos, c.err = l.rt.List(context.Background(), sandbox.ListOptions{})
		close(c.done)
		l.mu.Lock()
		c, l.next = l.next, nil
		l.cur = c
		l.mu.Unlock()
	}
}

// hasLabels reports whether in carries every one of labels.
func hasLabels(in sandbox.Info, labels map[string]string) bool {
	for k, v := range labels {
		if got, ok := in.Spec.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
