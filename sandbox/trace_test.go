package sandbox

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// spanNames is a tracer provider that records the names of started spans.
type spanNames struct {
	noop.TracerProvider
	mu    sync.Mutex // guards names
	names []string
}

func (p *spanNames) Tracer(string, ...trace.TracerOption) trace.Tracer { return spanTracer{p: p} }

type spanTracer struct {
	noop.Tracer
	p *spanNames
}

func (t spanTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	t.p.mu.Lock()
	t.p.names = append(t.p.names, name)
	t.p.mu.Unlock()
	return t.Tracer.Start(ctx, name, opts...)
}

func TestRuntimeSpans(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	tp := &spanNames{}
	r, err := Open(testutil.ShortTempDir(t), WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, Spec{ID: "traced", Kernel: haltGuest(t, "t"), Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, "traced"); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(ctx, "traced"); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, "traced"); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, "traced", false); err != nil {
		t.Fatal(err)
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, want := range []string{"sandbox.Create", "sandbox.Start", "sandbox.Pause", "sandbox.Stop", "sandbox.Remove"} {
		if !slices.Contains(tp.names, want) {
			t.Errorf("no span %q among %v", want, tp.names)
		}
	}
}
