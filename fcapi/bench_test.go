package fcapi

import (
	"net/http"
	"testing"
)

// BenchmarkGetInstanceInfo measures one request over a kept-alive Unix
// socket connection to an in-process server.
func BenchmarkGetInstanceInfo(b *testing.B) {
	srv := newTestServer(b, "1.14.2", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, InstanceInfo{ID: "bench", State: StateRunning, VMMVersion: "1.14.2", AppName: "Firecracker"})
	})
	c := srv.client(b)
	ctx := b.Context()
	for b.Loop() {
		if _, err := c.GetInstanceInfo(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCapabilitiesSupports(b *testing.B) {
	v := MustParseVersion("1.7.0")
	caps := CapabilitiesOf(v)
	for b.Loop() {
		caps.Supports(FeatureHugePages)
	}
}
