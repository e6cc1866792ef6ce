package vmm

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// recordingProvider records the names of the spans started through it.
type recordingProvider struct {
	noop.TracerProvider
	mu    sync.Mutex // guards names
	names []string
}

func (p *recordingProvider) Tracer(string, ...trace.TracerOption) trace.Tracer {
	return recordingTracer{p: p}
}

func (p *recordingProvider) spans() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.names)
}

type recordingTracer struct {
	noop.Tracer
	p *recordingProvider
}

func (t recordingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	t.p.mu.Lock()
	t.p.names = append(t.p.names, name)
	t.p.mu.Unlock()
	return t.Tracer.Start(ctx, name, opts...)
}

func TestTracing(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	tp := &recordingProvider{}
	m, err := New(testConfig(t, b, "traced", guest.Halt), WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	// Getters record no spans.
	m.PID()
	m.State()
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"vmm.Start", "vmm.Pause", "vmm.Resume", "vmm.Stop"}
	if got := tp.spans(); !slices.Equal(got, want) {
		t.Errorf("spans %v, want %v", got, want)
	}
}
