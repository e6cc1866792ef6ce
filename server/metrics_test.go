package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
)

// /metrics: Prometheus' text format with the requests by API and code and
// the sandboxes by status; a key is needed on untrusted listeners.
func TestMetrics(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	_, err := r.client.Create(ctx, r.idleSpec("m1"), sandbox.CreateOptions{})
	must(t, err)
	_, err = r.client.Start(ctx, "m1")
	must(t, err)
	t.Cleanup(func() { _ = r.rt.Remove(context.Background(), "m1", true) })
	if status, _ := do(t, r, "GET", "/v2/sandboxes", "", ""); status != 401 {
		t.Fatalf("list without key: %d", status)
	}
	if status, _ := do(t, r, "GET", "/metrics", "", ""); status != 401 {
		t.Fatalf("metrics without key: %d", status)
	}
	req, err := http.NewRequest("GET", r.url+"/metrics", nil)
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	must(t, err)
	for _, want := range []string{
		`kindlingd_requests_total{api="e2b",code="401"} 1`,
		`kindlingd_requests_total{api="native",code="200"} 2`,
		`kindlingd_sandboxes{status="running"} 1`,
		`kindlingd_request_duration_seconds_bucket{api="native",le="+Inf"} 2`,
		`kindlingd_leases 0`,
		`kindlingd_spare_monitors 0`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", b)
	}
}
