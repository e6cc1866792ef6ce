package sandbox

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names the runtime's tracer.
const tracerName = "github.com/kindling-vm/kindling/sandbox"

// span starts the span of one whole runtime operation on sandbox id; the
// returned func ends it, recording *errp when it is not nil.
func (r *Runtime) span(ctx context.Context, name, id string) (context.Context, func(errp *error)) {
	ctx, sp := r.tp.Tracer(tracerName).Start(ctx, name, trace.WithAttributes(attribute.String("sandbox.id", id)))
	return ctx, func(errp *error) {
		if errp != nil && *errp != nil {
			sp.RecordError(*errp)
			sp.SetStatus(codes.Error, (*errp).Error())
		}
		sp.End()
	}
}
