package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// The network rows alone, against the fake Firecracker: each is measured
// on the runtime path, the pool's row has its target checked, and nothing
// is left in $TMPDIR.
func TestRunNet(t *testing.T) {
	if err := netReady(); err != nil {
		t.Skip(err)
	}
	testutil.CheckLeaks(t)
	t.Setenv(envFirecracker, testutil.FakeFirecracker(t))
	tmp := testutil.ShortTempDir(t)
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"-n", "3", "--ops", "net_setup,net_setup_pool,net_start", "--json"}, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("decode: %v\n%s", err, stdout.String())
	}
	got := map[string]Row{}
	for _, r := range rep.Rows {
		got[r.Metric] = r
	}
	for _, m := range []string{"net_setup", "net_setup_pool", "net_start_plain", "net_start_fresh", "net_start_pool"} {
		r, ok := got[m]
		if !ok || r.Path != pathRuntime || r.Error != "" || r.N != 3 {
			t.Errorf("row %s: %+v (present %v)", m, r, ok)
		}
	}
	if r := got["net_setup_pool"]; r.Target == "" || r.Met == nil {
		t.Errorf("net_setup_pool: target %q, met %v: want a checked target", r.Target, r.Met)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the bench left %d entries in $TMPDIR, first %s", len(left), left[0].Name())
	}
	t.Logf("%s", stdout.String())
}
