package main

import (
	"fmt"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chartCap is the largest ratio drawn to scale; longer bars are cut there
// and labelled with their value.
const chartCap = 5.0

var pathColors = map[string]color.Color{
	pathLib:     color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	pathRuntime: color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	pathCLI:     color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// writeChart draws, for every timed metric, one bar per kindling path: its
// cost relative to raw (median time over raw median time; for the
// concurrent metrics, raw throughput over the path's). 1 is as fast as raw.
func writeChart(file string, rep *Report) error {
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
		return fmt.Errorf("no ratios to draw")
	}
	// Top to bottom in report order: the Y axis counts upwards.
	labels := make([]string, len(metrics))
	for i, m := range metrics {
		labels[len(metrics)-1-i] = titles[m]
	}

	p := plot.New()
	p.Title.Text = fmt.Sprintf("kindling vs raw, Firecracker %s, n=%d", rep.FirecrackerVersion, rep.N)
	p.X.Label.Text = "median time / raw median time (throughput rows: raw / path); 1 = as fast as raw, lower is better; bars cut at 5×"
	p.X.Label.TextStyle.Font.Size = vg.Points(9)
	p.Y.Tick.Label.Font.Size = vg.Points(9)
	p.Y.Padding = vg.Points(8)
	p.X.Min, p.X.Max = 0, chartCap*1.25
	p.Legend.Top = true

	paths := []string{pathLib, pathRuntime, pathCLI}
	barW := vg.Points(7)
	var marks plotter.XYLabels
	for j, path := range paths {
		vals := make(plotter.Values, len(metrics))
		for i, m := range metrics {
			v := ratio[key{m, path}]
			row := float64(len(metrics) - 1 - i)
			off := float64(j-1) * 0.27
			if v > chartCap {
				marks.XYs = append(marks.XYs, plotter.XY{X: chartCap + 0.05, Y: row + off})
				marks.Labels = append(marks.Labels, fmt.Sprintf("%.0f×", v))
				v = chartCap
			}
			vals[len(metrics)-1-i] = v
		}
		b, err := plotter.NewBarChart(vals, barW)
		if err != nil {
			return err
		}
		b.Horizontal = true
		b.Offset = vg.Length(j-1) * barW
		b.Color = pathColors[path]
		b.LineStyle.Width = 0
		p.Add(b)
		p.Legend.Add(path, b)
	}
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.6}, {X: 1, Y: float64(len(metrics)) - 0.4}})
	if err != nil {
		return err
	}
	one.LineStyle.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	p.Add(one)
	if len(marks.XYs) > 0 {
		l, err := plotter.NewLabels(marks)
		if err != nil {
			return err
		}
		for i := range l.TextStyle {
			l.TextStyle[i].YAlign = -0.5
		}
		p.Add(l)
	}
	p.NominalY(labels...)
	h := vg.Length(math.Max(4, 0.45*float64(len(metrics))+1.2)) * vg.Inch
	return p.Save(11*vg.Inch, h, file)
}
