package network

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// spanRecorder is a tracer provider that records started spans' names and
// the ones ended with an error status.
type spanRecorder struct {
	noop.TracerProvider
	mu     sync.Mutex // guards names, failed
	names  []string
	failed []string
}

func (p *spanRecorder) Tracer(string, ...trace.TracerOption) trace.Tracer { return recTracer{p: p} }

type recTracer struct {
	noop.Tracer
	p *spanRecorder
}

func (t recTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	t.p.mu.Lock()
	t.p.names = append(t.p.names, name)
	t.p.mu.Unlock()
	ctx, sp := t.Tracer.Start(ctx, name, opts...)
	return ctx, recSpan{Span: sp, p: t.p, name: name}
}

type recSpan struct {
	trace.Span
	p    *spanRecorder
	name string
}

func (s recSpan) SetStatus(c codes.Code, _ string) {
	if c == codes.Error {
		s.p.mu.Lock()
		s.p.failed = append(s.p.failed, s.name)
		s.p.mu.Unlock()
	}
}

func TestManagerSpans(t *testing.T) {
	tp := &spanRecorder{}
	m := &Manager{TracerProvider: tp}
	if _, err := m.Setup(context.Background(), Spec{SandboxID: "-bad"}); err == nil {
		t.Fatal("Setup of a bad ID succeeded")
	}
	if err := m.Teardown(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if !slices.Equal(tp.names, []string{"network.Setup"}) || !slices.Equal(tp.failed, []string{"network.Setup"}) {
		t.Errorf("spans %v, failed %v; want one failed network.Setup", tp.names, tp.failed)
	}
}
