package sandbox

import (
	"context"
	"log/slog"
	"slices"
	"strings"
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

// spanTree is a tracer provider that gives each span an ID and records its
// parent's, so a test can check how spans nest.
type spanTree struct {
	noop.TracerProvider
	mu    sync.Mutex // guards spans and next
	spans []recordedSpan
	next  uint64
}

type recordedSpan struct {
	name         string
	id, parentID trace.SpanID
}

func (p *spanTree) Tracer(string, ...trace.TracerOption) trace.Tracer { return treeTracer{p: p} }

type treeTracer struct {
	noop.Tracer
	p *spanTree
}

// treeSpan is a no-op span that carries its own span context.
type treeSpan struct {
	trace.Span
	sc trace.SpanContext
}

func (s treeSpan) SpanContext() trace.SpanContext { return s.sc }

func (t treeTracer) Start(ctx context.Context, name string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	t.p.mu.Lock()
	t.p.next++
	var id trace.SpanID
	for i := range 8 {
		id[i] = byte(t.p.next >> (8 * i))
	}
	t.p.spans = append(t.p.spans, recordedSpan{name: name, id: id, parentID: parent.SpanID()})
	t.p.mu.Unlock()
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: id, TraceFlags: trace.FlagsSampled})
	_, noopSpan := t.Tracer.Start(ctx, name)
	s := treeSpan{Span: noopSpan, sc: sc}
	return trace.ContextWithSpan(ctx, s), s
}

// The driver's spans are recorded, as children of the runtime's span.
func TestDriverSpansUnderRuntimeSpan(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	tp := &spanTree{}
	r, err := Open(testutil.ShortTempDir(t), WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, Spec{ID: "nested", Kernel: haltGuest(t, "t"), Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, "nested", true)
	if _, err := r.Start(ctx, "nested"); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(ctx, "nested"); err != nil {
		t.Fatal(err)
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	byName := map[string]recordedSpan{}
	for _, s := range tp.spans {
		byName[s.name] = s
	}
	outer, ok := byName["sandbox.Pause"]
	if !ok {
		t.Fatalf("no sandbox.Pause span among %v", tp.spans)
	}
	for _, child := range []string{"vmm.Attach", "vmm.Pause"} {
		s, ok := byName[child]
		switch {
		case !ok:
			t.Errorf("no %s span among %v", child, tp.spans)
		case s.parentID != outer.id:
			t.Errorf("%s span's parent is %v, want sandbox.Pause (%v)", child, s.parentID, outer.id)
		}
	}
}

// WithLogger's logger gets the runtime's debug lines and the driver's.
func TestLoggerReachesDriver(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := Open(testutil.ShortTempDir(t), WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, Spec{ID: "logged", Kernel: haltGuest(t, "t"), Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer r.Remove(ctx, "logged", true)
	if _, err := r.Start(ctx, "logged"); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(ctx, "logged"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`msg="recorded sandbox" sandbox=logged`, `msg="attached to VMM" sandbox=logged op=pause`, "vmm=logged"} {
		if !strings.Contains(out, want) {
			t.Errorf("log has no %q:\n%s", want, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testutil.SyncBuffer
