package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestRun runs the whole bench against the fake Firecracker with few
// iterations. It checks that every operation is measured on every path and
// that the outputs are well formed, never the timings.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs the whole bench (builds kindling, starts many fake VMMs)")
	}
	fake := testutil.FakeFirecracker(t)
	tests := []struct {
		name  string
		args  func(dir string) []string
		check func(t *testing.T, dir string, stdout string)
	}{
		{
			name: "table",
			args: func(string) []string { return []string{"-n", "2", "--concurrency", "2", "--phases"} },
			check: func(t *testing.T, _ string, stdout string) {
				if strings.Contains(stdout, "FAILED") {
					t.Errorf("a path failed:\n%s", stdout)
				}
				for _, d := range metricDefs([]int{2}, true) {
					if strings.HasPrefix(d.key, "agent_") && agentReady() != nil {
						continue // not measured here: see agentReady
					}
					if strings.HasPrefix(d.key, "net_") && netReady() != nil {
						continue // not measured here: see netReady
					}
					if !strings.Contains(stdout, d.title) {
						t.Errorf("no row for %q in:\n%s", d.title, stdout)
					}
				}
			},
		},
		{
			name: "json and svg",
			args: func(dir string) []string {
				return []string{"-n", "2", "--concurrency", "2,3", "--json", "--svg", filepath.Join(dir, "ratios.svg")}
			},
			check: func(t *testing.T, dir string, stdout string) {
				var rep Report
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatalf("decode JSON output: %v\n%s", err, stdout)
				}
				got := map[string]Row{}
				for _, r := range rep.Rows {
					got[r.Metric+"/"+r.Path] = r
					if r.Error != "" {
						t.Errorf("%s on %s failed: %s", r.Metric, r.Path, r.Error)
					}
					if r.N != 2 {
						t.Errorf("%s on %s: n = %d, want 2", r.Metric, r.Path, r.N)
					}
				}
				// The kindling paths; the server's have rows of their own.
				pathOrder := []string{pathRaw, pathLib, pathRuntime, pathCLI}
				want := map[string][]string{
					"spawn":            {pathRaw, pathLib},
					"snapshot":         {pathRaw, pathLib},
					"start":            pathOrder,
					"stop":             pathOrder,
					"stop_exited":      pathOrder,
					"pause":            pathOrder,
					"resume":           pathOrder,
					"snapshot_running": pathOrder,
					"restore":          pathOrder,
					"clone":            {pathRaw, pathRuntime, pathCLI},
					"concurrent_2":     pathOrder,
					"concurrent_3":     pathOrder,
					"memory":           pathOrder,
					"memory_pss":       pathOrder,
					"memory_at_2":      {pathRuntime, pathCLI},
					"fleet_booted_2":   {pathRuntime, pathCLI},
					"fleet_clones_2":   {pathRuntime},
				}
				if netReady() == nil {
					for _, m := range []string{"net_setup", "net_setup_pool", "net_start_plain", "net_start_fresh", "net_start_pool"} {
						want[m] = []string{pathRuntime}
					}
				}
				if agentReady() == nil {
					want["agent_exec"] = []string{pathRaw, pathRuntime}
					want["agent_files"] = []string{pathRaw, pathRuntime}
				}
				if imageReady() == nil {
					want["image_import_cold"] = []string{pathRaw, pathLib, pathCLI}
					want["image_import_cached"] = []string{pathLib, pathCLI}
					want["rootfs_copy"] = []string{pathRaw, pathLib}
					want["rootfs_copy_disk"] = []string{pathRaw, pathLib}
					want["run_image"] = []string{pathRaw, pathCLI}
				}
				for metric, paths := range want {
					for _, p := range paths {
						r, ok := got[metric+"/"+p]
						if !ok {
							t.Errorf("no row for %s on %s", metric, p)
							continue
						}
						noRatio := strings.HasPrefix(metric, "memory") || strings.HasPrefix(metric, "fleet") || strings.HasPrefix(metric, "net_") ||
							strings.HasSuffix(metric, "_disk") || metric == "image_import_cached" // bytes or no raw floor
						if p != pathRaw && !noRatio && r.Ratio == nil {
							t.Errorf("%s on %s has no ratio to raw", metric, p)
						}
					}
				}
				if r := got["start/"+pathLib]; r.Target == "" || r.Met == nil {
					t.Errorf("start on lib: target %q, met %v: want a checked target", r.Target, r.Met)
				}
				checkChart(t, filepath.Join(dir, "ratios.svg"), rep)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			t.Setenv(envFirecracker, fake)
			out := t.TempDir()
			// The bench makes its temporary directory under $TMPDIR: point
			// that at an empty directory to see that nothing is left there.
			tmp := testutil.ShortTempDir(t)
			t.Setenv("TMPDIR", tmp)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			if err := run(ctx, tt.args(out), &stdout, &stderr); err != nil {
				t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
			}
			tt.check(t, out, stdout.String())
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("the bench left %d entries in $TMPDIR, first %s", len(left), left[0].Name())
			}
		})
	}
}

// TestRunRefuses checks the errors given before anything is started.
func TestRunRefuses(t *testing.T) {
	fake := testutil.FakeFirecracker(t)
	tests := []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"no firecracker", "", nil, envFirecracker + " is not set"},
		{"missing firecracker", "/nonexistent/firecracker", nil, "no such file"},
		{"zero iterations", fake, []string{"-n", "0"}, "give at least 1"},
		{"bad concurrency", fake, []string{"--concurrency", "x"}, "--concurrency"},
		{"unknown scenario", fake, []string{"--ops", "nope"}, "no such scenario"},
		{"extra argument", fake, []string{"extra"}, "unexpected argument"},
		{"missing kindlingd", fake, []string{"--kindlingd", "/nonexistent/kindlingd"}, "--kindlingd: stat /nonexistent/kindlingd: no such file"},
		{"monitor not executable", fake, []string{"--kindlingd-monitor", "bench_test.go"}, "not an executable file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envFirecracker, tt.env)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %q, want nothing", stdout.String())
			}
		})
	}
}

// checkChart checks that the chart at path is well-formed SVG with one bar
// (a rect with a title naming the path) per ratio of rep.
func checkChart(t *testing.T, path string, rep Report) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name `xml:"svg"`
		Rects   []struct {
			Title string `xml:"title"`
		} `xml:"rect"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("chart is not SVG: %v", err)
	}
	bars := 0
	for _, r := range doc.Rects {
		if r.Title != "" {
			bars++
		}
	}
	want := 0
	for _, r := range rep.Rows {
		if r.Ratio != nil && r.Path != pathRaw && *r.Ratio > 0 {
			want++
		}
	}
	if want == 0 || bars != want {
		t.Errorf("chart has %d bars, the report %d ratios", bars, want)
	}
}

// TestRunServer runs the server scenarios once against the fake
// Firecracker: kindlingd is built, started and stopped, every server row
// is produced on its paths with a plausible value, and nothing is left.
// It checks no timing against a target.
func TestRunServer(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds kindling and kindlingd and starts fake VMMs")
	}
	testutil.CheckLeaks(t)
	t.Setenv(envFirecracker, testutil.FakeFirecracker(t))
	tmp := testutil.ShortTempDir(t)
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"-n", "1", "--concurrency", "2", "--json", "--ops", "server_start,server_create,server_concurrent_2,server_memory"}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("decode JSON output: %v\n%s", err, stdout.String())
	}
	got := map[string]Row{}
	for _, r := range rep.Rows {
		got[r.Metric+"/"+r.Path] = r
	}
	want := map[string][]string{
		srvStart:        {pathRaw, pathAPI, pathCLIHost},
		srvPool:         {pathRaw, pathAPI},
		srvNoPool:       {pathRaw, pathAPI},
		srvConcKey(2):   {pathRaw, pathAPI},
		srvClonesKey(2): {pathRaw, pathAPI},
		srvCPUKey(2):    {pathAPI},
		srvMonCPUKey(2): {pathAPI},
		srvFCCPUKey(2):  {pathRaw, pathAPI},
		srvRSSIdle:      {pathAPI},
		srvRSSServing:   {pathAPI},
		srvRSSPer:       {pathAPI},
		srvMemFirst:     {pathAPI},
		srvMemFirstP:    {pathAPI},
		srvMemKth(2):    {pathAPI},
		srvMemKthP(2):   {pathAPI},
	}
	defs := map[string]metricDef{}
	for _, d := range serverMetricDefs([]int{2}) {
		defs[d.key] = d
		if _, ok := want[d.key]; !ok {
			t.Errorf("metric %s is not checked by this test", d.key)
		}
	}
	for metric, paths := range want {
		d, ok := defs[metric]
		if !ok {
			t.Errorf("metric %s is not defined", metric)
			continue
		}
		for _, p := range paths {
			r, ok := got[metric+"/"+p]
			switch {
			case !ok:
				t.Errorf("no row for %s on %s", metric, p)
				continue
			case r.Error != "":
				t.Errorf("%s on %s failed: %s", metric, p, r.Error)
				continue
			case r.N != 1:
				t.Errorf("%s on %s: n = %d, want 1", metric, p, r.N)
			}
			switch {
			case d.kind == kindBytes && metric == srvRSSPer:
				if r.Median < 0 || r.Median > 64<<20 {
					t.Errorf("%s on %s = %v bytes, want 0 to 64 MiB", metric, p, r.Median)
				}
			case d.kind == kindBytes:
				// A Go process's resident memory, plus a few files.
				if r.Median < 1<<20 || r.Median > 1<<30 {
					t.Errorf("%s on %s = %v bytes, want 1 MiB to 1 GiB", metric, p, r.Median)
				}
			default:
				if r.Median <= 0 || r.Median > opTimeout.Seconds() {
					t.Errorf("%s on %s = %v s, want within (0, %v]", metric, p, r.Median, opTimeout)
				}
				if p != pathRaw && slices.Contains(paths, pathRaw) && (r.Ratio == nil || *r.Ratio <= 0) {
					t.Errorf("%s on %s has no ratio to raw", metric, p)
				}
			}
			if _, ok := d.targets[p]; ok && (r.Target == "" || r.Met == nil) {
				t.Errorf("%s on %s: target %q, met %v: want a checked target", metric, p, r.Target, r.Met)
			}
		}
	}
	if r := got[srvMemFirstP+"/"+pathAPI]; r.Median > got[srvMemFirst+"/"+pathAPI].Median {
		t.Errorf("the first sandbox's monitor Pss (%v) exceeds its VmRSS (%v)", r.Median, got[srvMemFirst+"/"+pathAPI].Median)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the bench left %d entries in $TMPDIR, first %s", len(left), left[0].Name())
	}
}
