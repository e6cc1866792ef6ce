package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// With OTEL_EXPORTER_OTLP_ENDPOINT set, kindlingd exports its spans over
// OTLP/HTTP: here to a collector on loopback, which gets the request span
// and the runtime's span beneath it, with the service name, by the time
// kindlingd has exited.
func TestOTLPExport(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("collector got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()

	root := testutil.ShortTempDir(t)
	t.Cleanup(func() { cleanRoot(t, root) })
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "kindlingd-otlp-test")
	d := startDaemon(t, root)
	c := d.client(t)
	ctx := context.Background()
	if _, err := c.Create(ctx, sandbox.Spec{ID: "traced", Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "traced", true); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t, 10*time.Second); err != nil {
		t.Fatalf("kindlingd exit: %v\n%s", err, d.output)
	}
	mu.Lock()
	all := bytes.Join(bodies, nil)
	mu.Unlock()
	// The export is protobuf; its strings are there as they are.
	for _, want := range []string{"kindlingd.native", "kindlingd-otlp-test", "/kindling.v1.SandboxService/Create", "sandbox.Create"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("the collector got no %q (%d bytes in %d exports)", want, len(all), len(bodies))
		}
	}
}

// Only OTLP over HTTP is built in: another protocol is refused at start;
// no endpoint, or the SDK disabled, exports nothing.
func TestTracingSettings(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr bool
		sdk     bool
	}{
		{"unset", nil, false, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, false, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, false, true},
		{"disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}, false, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}, false, false},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
				t.Setenv(k, tc.env[k])
			}
			otel.SetTracerProvider(noop.NewTracerProvider())
			tp, flush, err := tracing(ctx)
			if (err != nil) != tc.wantErr {
				t.Fatalf("tracing: %v, want an error: %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			defer func() { _ = flush(ctx) }()
			_, isSDK := tp.(*sdktrace.TracerProvider)
			if isSDK != tc.sdk {
				t.Errorf("provider %T, want the SDK's: %v", tp, tc.sdk)
			}
		})
	}
	otel.SetTracerProvider(noop.NewTracerProvider())
}
