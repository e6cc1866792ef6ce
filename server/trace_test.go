package server_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// spanTree is a tracer provider that records each span's name with the
// name of the span it was started under.
type spanTree struct {
	noop.TracerProvider
	mu    sync.Mutex // guards spans
	spans [][2]string
}

type parentKey struct{}

func (p *spanTree) Tracer(string, ...trace.TracerOption) trace.Tracer { return treeTracer{p: p} }

type treeTracer struct {
	noop.Tracer
	p *spanTree
}

func (t treeTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent, _ := ctx.Value(parentKey{}).(string)
	t.p.mu.Lock()
	t.p.spans = append(t.p.spans, [2]string{parent, name})
	t.p.mu.Unlock()
	ctx, span := t.Tracer.Start(ctx, name, opts...)
	return context.WithValue(ctx, parentKey{}, name), span
}

// Each request gets a span, the parent of the runtime's spans.
func TestRequestSpans(t *testing.T) {
	tp := &spanTree{}
	r := newRig(t, server.Config{TracerProvider: tp})
	rt, err := sandbox.Open(r.rt.Root(), sandbox.WithTracerProvider(tp))
	must(t, err)
	// A server whose runtime shares the tracer provider.
	s, err := server.New(context.Background(), server.Config{Runtime: rt, TracerProvider: tp})
	must(t, err)
	defer s.Close()
	ctx := context.Background()
	c := clientFor(t, serve(t, s.Handler(true)))
	_, err = c.Create(ctx, r.idleSpec("traced"), sandbox.CreateOptions{})
	must(t, err)
	must(t, c.Remove(ctx, "traced", true))
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, want := range [][2]string{{"", "kindlingd.native"}, {"kindlingd.native", "sandbox.Create"}} {
		if !slices.Contains(tp.spans, want) {
			t.Errorf("no span %q under %q in %v", want[1], want[0], tp.spans)
		}
	}
}
