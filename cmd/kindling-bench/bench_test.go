package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
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
				if agentReady() == nil {
					want["agent_exec"] = []string{pathRaw, pathRuntime}
					want["agent_files"] = []string{pathRaw, pathRuntime}
				}
				for metric, paths := range want {
					for _, p := range paths {
						r, ok := got[metric+"/"+p]
						if !ok {
							t.Errorf("no row for %s on %s", metric, p)
							continue
						}
						if p != pathRaw && !strings.HasPrefix(metric, "memory") && !strings.HasPrefix(metric, "fleet") && r.Ratio == nil {
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
