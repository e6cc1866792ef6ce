package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"strings"
)

// The chart is SVG written with the standard library: text, small, viewable
// in any browser, and it keeps plotting libraries (with their fonts, LaTeX
// and PDF packages) out of kindling's module graph.

// chartCap is the largest ratio drawn to scale; longer bars are cut there
// and labelled with their value.
const chartCap = 5.0

var pathColors = map[string]string{
	pathLib:     "#1f77b4",
	pathRuntime: "#ff7f0e",
	pathCLI:     "#2ca02c",
	pathAPI:     "#9467bd",
	pathCLIHost: "#8c564b",
}

// Layout of the chart, in SVG user units (pixels).
const (
	chartWidth  = 1000
	chartLeft   = 300 // room for the metric titles
	chartRight  = 40
	chartTop    = 70 // title and legend
	chartBottom = 60 // axis ticks and label
	chartRow    = 36 // one metric
	chartBar    = 9  // one path's bar in a row
)

// writeChart draws, for every timed metric, one bar per kindling path: its
// cost relative to raw (median time over raw median time; for the
// concurrent metrics, raw throughput over the path's). 1 is as fast as raw.
func writeChart(file string, rep *Report) error {
	b, err := chartSVG(rep)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// chartSVG renders the chart of writeChart.
func chartSVG(rep *Report) ([]byte, error) {
	type key struct{ metric, path string }
	ratio := map[key]float64{}
	var metrics []string
	titles := map[string]string{}
	for _, r := range rep.Rows {
		if r.Ratio == nil || r.Path == pathRaw || *r.Ratio <= 0 {
			continue
		}
		v := *r.Ratio
		if r.Throughput != nil {
			v = 1 / v // throughput ratio → time ratio, so that lower is better throughout
		}
		if _, ok := titles[r.Metric]; !ok {
			metrics = append(metrics, r.Metric)
			short, _, _ := strings.Cut(r.Title, " (") // the axis has little room
			titles[r.Metric] = short
		}
		ratio[key{r.Metric, r.Path}] = v
	}
	if len(metrics) == 0 {
		return nil, fmt.Errorf("no ratios to draw")
	}

	plotW := float64(chartWidth - chartLeft - chartRight)
	xMax := chartCap * 1.25
	x := func(v float64) float64 { return chartLeft + v/xMax*plotW }
	height := chartTop + chartRow*len(metrics) + chartBottom
	plotBottom := float64(chartTop + chartRow*len(metrics))

	var w bytes.Buffer
	fmt.Fprintf(&w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(&w, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartWidth, height)
	text(&w, chartWidth/2, 22, "middle", 15,
		fmt.Sprintf("kindling vs raw, Firecracker %s, n=%d", rep.FirecrackerVersion, rep.N))

	// Legend.
	var paths []string
	for _, p := range pathOrder[1:] {
		for _, r := range rep.Rows {
			if r.Path == p && r.Ratio != nil {
				paths = append(paths, p)
				break
			}
		}
	}
	for j, p := range paths {
		lx := float64(chartLeft + 120*j)
		fmt.Fprintf(&w, `<rect x="%.1f" y="38" width="14" height="10" fill="%s"/>`+"\n", lx, pathColors[p])
		text(&w, lx+20, 47, "start", 12, p)
	}

	// Grid and X axis: a tick at every whole ratio, a dashed line at 1.
	for v := 0.0; v <= xMax; v++ {
		fmt.Fprintf(&w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x(v), chartTop, x(v), plotBottom)
		text(&w, x(v), plotBottom+16, "middle", 11, fmt.Sprintf("%g", v))
	}
	fmt.Fprintf(&w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="black" stroke-dasharray="4 4"/>`+"\n", x(1), chartTop, x(1), plotBottom)
	text(&w, chartLeft+plotW/2, plotBottom+40, "middle", 11,
		"median time / raw median time (throughput rows: raw / path); 1 = as fast as raw, lower is better; bars cut at 5×")

	// One row per metric, top to bottom in report order.
	for i, m := range metrics {
		rowTop := float64(chartTop + chartRow*i)
		mid := rowTop + chartRow/2
		text(&w, chartLeft-8, mid+4, "end", 12, titles[m])
		// The row's bars, centred on it (at most three paths share a row).
		var here []string
		for _, p := range paths {
			if _, ok := ratio[key{m, p}]; ok {
				here = append(here, p)
			}
		}
		for j, p := range here {
			v := ratio[key{m, p}]
			y := mid + (float64(j)-float64(len(here)-1)/2)*chartBar - chartBar/2
			drawn := math.Min(v, chartCap)
			fmt.Fprintf(&w, `<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="%s"><title>%s %s: %.2f×</title></rect>`+"\n",
				chartLeft, y, x(drawn)-chartLeft, chartBar-1, pathColors[p], escape(titles[m]), p, v)
			if v > chartCap {
				text(&w, x(chartCap)+4, y+chartBar-1, "start", 10, fmt.Sprintf("%.0f×", v))
			}
		}
	}
	fmt.Fprintf(&w, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="black"/>`+"\n", chartLeft, chartTop, chartLeft, plotBottom)
	w.WriteString("</svg>\n")
	return w.Bytes(), nil
}

// text writes one SVG text element holding s, escaped.
func text(w *bytes.Buffer, x, y float64, anchor string, size int, s string) {
	fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d">%s</text>`+"\n", x, y, anchor, size, escape(s))
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
