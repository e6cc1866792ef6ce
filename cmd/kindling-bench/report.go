package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// kind says what a metric's values are.
type kind int

const (
	kindTime  kind = iota // seconds, lower is better
	kindBytes             // bytes, lower is better, no ratio
	kindConc              // wall seconds to start k VMs at once; shown as throughput
)

// targetKind says how a target is checked.
type targetKind int

const (
	ratioAtMost  targetKind = iota // ratio of medians to raw ≤ value
	ratioAtLeast                   // throughput ratio to raw ≥ value
	absBelow                       // median < value (seconds)
	absAtMost                      // median ≤ value (bytes)
)

// target is a goal for one metric on one path.
type target struct {
	kind  targetKind
	value float64
}

func (t target) String() string {
	switch t.kind {
	case ratioAtMost:
		return fmt.Sprintf("≤ %.2f×", t.value)
	case ratioAtLeast:
		return fmt.Sprintf("≥ %.2f×", t.value)
	case absBelow:
		return "< " + fmtDuration(t.value)
	default:
		return "≤ " + fmtBytes(t.value)
	}
}

// metricDef describes a metric and its targets by path.
type metricDef struct {
	key     string
	title   string
	kind    kind
	k       int // VMs started at once, for kindConc
	targets map[string]target
}

// metricDefs lists the metrics in report order. Targets apply to the
// library path unless they name the CLI; the memory target applies to
// every path.
func metricDefs(conc []int, phases bool) []metricDef {
	mem := target{absAtMost, 4 << 20}
	defs := []metricDef{
		{key: "spawn", title: "spawn → API ready", kind: kindTime},
		{key: "start", title: "start → guest marker on console", kind: kindTime,
			targets: map[string]target{pathLib: {ratioAtMost, 1.10}, pathCLI: {ratioAtMost, 1.5}}},
	}
	if phases {
		defs = append(defs,
			metricDef{key: "start_api", title: "start phase: spawn → API ready", kind: kindTime},
			metricDef{key: "start_config", title: "start phase: machine config + boot source", kind: kindTime},
			metricDef{key: "start_instance", title: "start phase: InstanceStart", kind: kindTime},
			metricDef{key: "start_console", title: "start phase: wait for the console marker", kind: kindTime},
		)
	}
	defs = append(defs, []metricDef{
		{key: "stop", title: "stop a running VM", kind: kindTime,
			targets: map[string]target{pathLib: {ratioAtMost, 1.10}}},
		{key: "stop_exited", title: "stop an exited VMM", kind: kindTime,
			targets: map[string]target{pathLib: {absBelow, 0.005}}},
		{key: "pause", title: "pause", kind: kindTime,
			targets: map[string]target{pathLib: {ratioAtMost, 1.5}}},
		{key: "resume", title: "resume", kind: kindTime,
			targets: map[string]target{pathLib: {ratioAtMost, 1.5}}},
		{key: "snapshot", title: "snapshot create (paused, 128 MiB)", kind: kindTime,
			targets: map[string]target{pathLib: {ratioAtMost, 1.05}}},
		{key: "snapshot_running", title: "snapshot a running VM (pause+create+resume)", kind: kindTime},
		{key: "restore", title: "restore to running", kind: kindTime,
			targets: map[string]target{pathLib: {ratioAtMost, 1.25}}},
		{key: "clone", title: "clone from a template → running (raw: snapshot load)", kind: kindTime,
			targets: map[string]target{pathRuntime: {ratioAtMost, 1.25}}},
	}...)
	defs = append(defs,
		metricDef{key: "agent_exec", title: "exec `true` round trip through the agent (simulated guest)", kind: kindTime,
			targets: map[string]target{pathRuntime: {ratioAtMost, 1.3}}},
		metricDef{key: "agent_files", title: "1 MiB up + 1 MiB down through the agent (simulated guest)", kind: kindTime},
	)
	defs = append(defs, netMetricDefs()...)
	defs = append(defs, imageMetricDefs()...)
	for _, k := range conc {
		defs = append(defs, metricDef{key: concKey(k), title: fmt.Sprintf("%d VMs started at once (throughput)", k), kind: kindConc, k: k,
			targets: map[string]target{pathLib: {ratioAtLeast, 0.8}}})
	}
	defs = append(defs,
		metricDef{key: "memory", title: "host memory per sandbox beyond Firecracker", kind: kindBytes,
			targets: map[string]target{pathRaw: mem, pathLib: mem, pathRuntime: mem, pathCLI: mem}},
		metricDef{key: "memory_pss", title: "memory per sandbox, monitor's Pss instead of VmRSS", kind: kindBytes,
			targets: map[string]target{pathRaw: mem, pathLib: mem, pathRuntime: mem, pathCLI: mem}},
		metricDef{key: "memory_private", title: "memory per sandbox, monitor's RssAnon instead of VmRSS", kind: kindBytes},
	)
	for _, k := range conc {
		defs = append(defs, metricDef{key: memKey(k), title: fmt.Sprintf("memory per sandbox with %d running (monitor Pss)", k), kind: kindBytes,
			targets: map[string]target{pathRuntime: mem, pathCLI: mem}})
	}
	for _, k := range conc {
		defs = append(defs,
			metricDef{key: fleetKey("booted", k), title: fmt.Sprintf("host memory per sandbox, %d booted (Firecracker + monitor Pss)", k), kind: kindBytes},
			metricDef{key: fleetKey("clones", k), title: fmt.Sprintf("host memory per sandbox, %d clones of one template", k), kind: kindBytes})
	}
	defs = append(defs,
		metricDef{key: "fc_rss", title: "Firecracker's own RSS (for scale)", kind: kindBytes},
	)
	defs = append(defs, serverMetricDefs(conc)...)
	return defs
}

// Report is the whole result of a run, as --json prints it.
type Report struct {
	Date               time.Time `json:"date"`
	Command            string    `json:"command"`
	Firecracker        string    `json:"firecracker"`
	FirecrackerVersion string    `json:"firecracker_version"`
	Kindling           string    `json:"kindling"`
	// Monitor is the executable of the runtime and CLI paths' monitors.
	Monitor     string `json:"monitor"`
	N           int    `json:"n"`
	Concurrency []int  `json:"concurrency"`
	CPUs        int    `json:"cpus"`
	// LoadBefore and LoadAfter are /proc/loadavg's 1-minute load average
	// when the run began and ended: other work on the host shows there.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	Rows       []Row  `json:"rows"`
}

// Row is one metric on one path.
type Row struct {
	Metric string `json:"metric"`
	Title  string `json:"title"`
	Path   string `json:"path"`
	// Unit is "s" (Median and P90 in seconds; for the concurrent metrics
	// the wall time to start them all) or "bytes".
	Unit   string  `json:"unit"`
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	// Ratio is the path's median over the raw median; for the concurrent
	// metrics, the path's throughput over the raw throughput.
	Ratio *float64 `json:"ratio,omitempty"`
	// Throughput is VMs started per second, from the median wall time.
	Throughput *float64 `json:"throughput_per_s,omitempty"`
	Target     string   `json:"target,omitempty"`
	Met        *bool    `json:"met,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// results collects samples and failures while the bench runs.
type results struct {
	values map[string]map[string][]float64 // metric → path → values
	errs   map[string]map[string]string    // scenario → path → error
}

func newResults() *results {
	return &results{values: map[string]map[string][]float64{}, errs: map[string]map[string]string{}}
}

func (r *results) add(path string, s sample) {
	for k, v := range s {
		if r.values[k] == nil {
			r.values[k] = map[string][]float64{}
		}
		r.values[k][path] = append(r.values[k][path], v)
	}
}

func (r *results) fail(scen, path string, err error) {
	if r.errs[scen] == nil {
		r.errs[scen] = map[string]string{}
	}
	r.errs[scen][path] = err.Error()
}

// scenarioOf is the scenario that measures a metric.
func scenarioOf(metric string) string {
	if s, ok := serverScenarioOf(metric); ok {
		return s
	}
	if k, ok := strings.CutPrefix(metric, "memory_at_"); ok {
		return "concurrent_" + k
	}
	if k, ok := strings.CutPrefix(metric, "fleet_booted_"); ok {
		return "concurrent_" + k
	}
	if k, ok := strings.CutPrefix(metric, "fleet_clones_"); ok {
		return "clones_" + k
	}
	switch metric {
	case "memory", "memory_pss", "memory_private", "fc_rss", "start_api", "start_config", "start_instance", "start_console":
		return "start"
	case "resume":
		return "pause"
	case "snapshot_running":
		return "snapshot"
	}
	return metric
}

// rows computes every row from the collected values.
func (r *results) rows(defs []metricDef) []Row {
	var rows []Row
	for _, d := range defs {
		byPath := r.values[d.key]
		var rawMed float64
		if v := byPath[pathRaw]; len(v) > 0 {
			rawMed = quantile(v, 0.5)
		}
		for _, p := range pathOrder {
			v := byPath[p]
			errMsg := r.errs[scenarioOf(d.key)][p]
			if len(v) == 0 && errMsg == "" {
				continue // not measured on this path
			}
			row := Row{Metric: d.key, Title: d.title, Path: p, Unit: "s", N: len(v), Error: errMsg}
			if d.kind == kindBytes {
				row.Unit = "bytes"
			}
			if len(v) > 0 {
				row.Median, row.P90 = quantile(v, 0.5), quantile(v, 0.9)
				switch {
				case d.kind == kindTime && rawMed > 0:
					row.Ratio = ptr(row.Median / rawMed)
				case d.kind == kindConc:
					row.Throughput = ptr(float64(d.k) / row.Median)
					if rawMed > 0 {
						row.Ratio = ptr(rawMed / row.Median)
					}
				}
			}
			if t, ok := d.targets[p]; ok {
				row.Target = t.String()
				if met, ok := t.met(row); ok {
					row.Met = &met
				}
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// met checks the target against a row; ok is false when the row lacks what
// the check needs.
func (t target) met(r Row) (met, ok bool) {
	if r.N == 0 || r.Error != "" {
		return false, r.Error != ""
	}
	switch t.kind {
	case ratioAtMost:
		if r.Ratio == nil {
			return false, false
		}
		return *r.Ratio <= t.value, true
	case ratioAtLeast:
		if r.Ratio == nil {
			return false, false
		}
		return *r.Ratio >= t.value, true
	case absBelow:
		return r.Median < t.value, true
	default:
		return r.Median <= t.value, true
	}
}

func ptr(f float64) *float64 { return &f }

// quantile returns the q-quantile of v (linear interpolation between the
// nearest ranks).
func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 1 {
		return s[0]
	}
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// writeTable prints the report for people.
func writeTable(w io.Writer, rep *Report) error {
	fmt.Fprintf(w, "kindling-bench %s\n", rep.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "firecracker %s (%s), kindling %s, n=%d per path, %d CPUs, load average %s before, %s after\n\n",
		rep.FirecrackerVersion, filepath.Base(rep.Firecracker), rep.Kindling, rep.N, rep.CPUs, rep.LoadBefore, rep.LoadAfter)
	if rep.Monitor != "" {
		fmt.Fprintf(w, "monitor: %s\n\n", rep.Monitor)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OPERATION\tPATH\tMEDIAN\tP90\tRATIO\tTARGET\tMET\t")
	last := ""
	for _, r := range rep.Rows {
		title := r.Title
		if title == last {
			title = ""
		}
		last = r.Title
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tFAILED: %s\t\t\t%s\t%s\t\n", title, r.Path, oneLine(r.Error), r.Target, metText(r.Met))
			continue
		}
		med, p90, ratio := fmtValue(r, r.Median), fmtValue(r, r.P90), "—"
		if r.Throughput != nil {
			med = fmt.Sprintf("%.1f/s (%s)", *r.Throughput, fmtDuration(r.Median))
			p90 = fmtDuration(r.P90)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", title, r.Path, med, p90, ratio, r.Target, metText(r.Met))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRATIO: path median / raw median (throughput: path / raw). Targets apply to the lib path unless")
	fmt.Fprintln(w, "they name the CLI; memory is the monitor's RSS plus the sandbox's files, for every path.")
	fmt.Fprintln(w, "Server rows: api is kindlingd's native API through its Go client, cli-api is kindling --host.")
	return nil
}

func metText(m *bool) string {
	switch {
	case m == nil:
		return ""
	case *m:
		return "met"
	default:
		return "NOT met"
	}
}

func fmtValue(r Row, v float64) string {
	if r.Unit == "bytes" {
		return fmtBytes(v)
	}
	return fmtDuration(v)
}

// fmtDuration formats seconds with three significant digits.
func fmtDuration(s float64) string {
	switch {
	case s < 1e-3:
		return fmt.Sprintf("%.0f µs", s*1e6)
	case s < 10e-3:
		return fmt.Sprintf("%.2f ms", s*1e3)
	case s < 1:
		return fmt.Sprintf("%.1f ms", s*1e3)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

func fmtBytes(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// writeJSON prints the report for programs.
func writeJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
