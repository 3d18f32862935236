package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/transmanager/transmanager/internal/scenario"
)

// The x axes a chart can have.
const (
	chartWorkers = "workers"
	chartBatch   = "batch"
)

// chartDPI is the resolution of PNG charts: -chart-size is in pixels at
// this resolution, and SVG charts have the same size in CSS pixels.
const chartDPI = 96

// chartConfig is how bench draws its chart.
type chartConfig struct {
	path   string // ends in .png or .svg
	x      string // chartWorkers, chartBatch, or "" for the one that varies more
	width  int    // pixels
	height int    // pixels
}

// check reports an unusable -chart, -chart-x or -chart-size as a usage
// error and completes c.
func (c *chartConfig) check(size string) error {
	if c.path == "" {
		return nil
	}
	if ext := strings.ToLower(filepath.Ext(c.path)); ext != ".png" && ext != ".svg" {
		return usagef("bench: -chart %q: want a file name ending in .png or .svg", c.path)
	}
	if c.x != "" && c.x != chartWorkers && c.x != chartBatch {
		return usagef("bench: -chart-x %q: want workers or batch", c.x)
	}
	w, h, ok := strings.Cut(size, "x")
	var err error
	if ok {
		if c.width, err = strconv.Atoi(w); err == nil {
			c.height, err = strconv.Atoi(h)
		}
	}
	if !ok || err != nil || c.width < 100 || c.height < 100 || c.width > 10000 || c.height > 10000 {
		return usagef("bench: -chart-size %q: want WIDTHxHEIGHT in pixels, each from 100 to 10000", size)
	}
	return nil
}

// chartX returns the x axis of the chart of rows: want if given, otherwise
// whichever of workers and batch size takes more distinct values among the
// relay's rows (workers on a tie).
func chartX(rows []benchRow, want string) string {
	if want != "" {
		return want
	}
	var workers, batches []int
	for _, r := range rows {
		if r.Impl == scenario.ImplLoop {
			continue
		}
		if !slices.Contains(workers, r.Workers) {
			workers = append(workers, r.Workers)
		}
		if !slices.Contains(batches, r.Batch) {
			batches = append(batches, r.Batch)
		}
	}
	if len(batches) > len(workers) {
		return chartBatch
	}
	return chartWorkers
}

// chartSeries is one line of the chart: a label and its points sorted by x.
type chartSeries struct {
	label string
	xys   plotter.XYs
}

// chartLines groups rows into one line per setting of what is not on the x
// axis: "batch 500, leases" against workers, "workers 4, leases" against
// batch size. The loop, which has no workers, is one line ("loop") against
// batch size and left out against workers. A line's y is y(row); rows for
// which y reports false are left out.
func chartLines(rows []benchRow, x string, y func(benchRow) (float64, bool)) []chartSeries {
	var lines []chartSeries
	for _, r := range rows {
		yv, ok := y(r)
		if !ok {
			continue
		}
		var label string
		var v float64
		switch {
		case r.Impl == scenario.ImplLoop && x == chartWorkers:
			continue
		case r.Impl == scenario.ImplLoop:
			label, v = "loop", float64(r.Batch)
		case x == chartWorkers:
			label, v = fmt.Sprintf("batch %d, %ss", r.Batch, r.Claims), float64(r.Workers)
		default:
			label, v = fmt.Sprintf("workers %d, %ss", r.Workers, r.Claims), float64(r.Batch)
		}
		i := slices.IndexFunc(lines, func(s chartSeries) bool { return s.label == label })
		if i < 0 {
			lines = append(lines, chartSeries{label: label})
			i = len(lines) - 1
		}
		lines[i].xys = append(lines[i].xys, plotter.XY{X: v, Y: yv})
	}
	for _, l := range lines {
		slices.SortFunc(l.xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
	}
	return lines
}

// throughput and handledP99 are the charts' y values.
func throughput(r benchRow) (float64, bool) { return r.MsgsPerSec, true }

func handledP99(r benchRow) (float64, bool) {
	if r.Handled == nil {
		return 0, false
	}
	return r.Handled.P99, true
}

// writeBenchChart draws the median throughput of r's rows against c's x
// axis, one line per remaining setting, and under it, when the sweep ran
// latency runs, their commit → handled p99 the same way; it writes the
// chart to w as a PNG or an SVG by c.path's extension.
func writeBenchChart(w io.Writer, r *benchReport, c chartConfig) error {
	x := chartX(r.Rows, c.x)
	lines := chartLines(r.Rows, x, throughput)
	if len(lines) == 0 {
		return fmt.Errorf("bench: chart: no point to draw")
	}
	// A setting keeps its colour, marker and dashes in both panels.
	styles := map[string]int{}
	for i, l := range lines {
		styles[l.label] = i
	}
	top, err := chartPlot(lines, styles, x, fmt.Sprintf("msgs/s (median of %d)", r.Count))
	if err != nil {
		return err
	}
	top.Title.Text = fmt.Sprintf("txm bench: relay throughput and latency\nstore: %s; broker: %s", r.Store, r.Broker)
	top.Y.Tick.Marker = thousandsTicks{}
	plots := [][]*plot.Plot{{top}}
	if lat := chartLines(r.Rows, x, handledP99); len(lat) > 0 {
		bottom, err := chartPlot(lat, styles, x, fmt.Sprintf("commit → handled p99, ms\nat %s msgs/s", thousands(float64(r.Rate))))
		if err != nil {
			return err
		}
		plots = append(plots, []*plot.Plot{bottom})
	}

	// Pixels to points (1/72 inch) at chartDPI.
	width := vg.Length(c.width) * vg.Inch / chartDPI
	height := vg.Length(c.height) * vg.Inch / chartDPI
	var canvas vg.CanvasWriterTo
	if strings.ToLower(filepath.Ext(c.path)) == ".svg" {
		canvas = vgsvg.New(width, height)
	} else {
		canvas = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(chartDPI))}
	}
	dc := draw.New(canvas)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Millimeter * 4, PadTop: vg.Millimeter, PadBottom: vg.Millimeter}
	canvases := plot.Align(plots, tiles, dc)
	for i, row := range plots {
		row[0].Draw(canvases[i][0])
	}
	_, err = canvas.WriteTo(w)
	return err
}

// chartPlot is one panel: lines against x from 0, with a grid, each drawn
// in the style styles gives its label.
func chartPlot(lines []chartSeries, styles map[string]int, x, yLabel string) (*plot.Plot, error) {
	p := plot.New()
	p.X.Label.Text = map[string]string{chartWorkers: "relay workers", chartBatch: "batch size"}[x]
	p.Y.Label.Text = yLabel
	p.Y.Min = 0
	var xs []float64
	for _, l := range lines {
		line, points, err := plotter.NewLinePoints(l.xys)
		if err != nil {
			return nil, fmt.Errorf("bench: chart: %w", err)
		}
		i := styles[l.label]
		line.Color, line.Dashes = plotutil.Color(i), plotutil.Dashes(i)
		points.Color, points.Shape = plotutil.Color(i), plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(l.label, line, points)
		for _, xy := range l.xys {
			if !slices.Contains(xs, xy.X) {
				xs = append(xs, xy.X)
			}
		}
	}
	slices.Sort(xs)
	var ticks []plot.Tick
	for _, v := range xs {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	// The legend goes to the bottom right, and the top gets some room.
	p.Legend.XOffs = -vg.Millimeter
	p.Legend.YOffs = vg.Millimeter
	p.Y.Max *= 1.08
	p.Add(plotter.NewGrid())
	return p, nil
}

// saveBenchChart writes the chart to c.path.
func saveBenchChart(r *benchReport, c chartConfig) error {
	var buf bytes.Buffer
	if err := writeBenchChart(&buf, r, c); err != nil {
		return err
	}
	if err := os.WriteFile(c.path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	return nil
}

// thousandsTicks is the default tick marker with labels such as "12,000".
type thousandsTicks struct{}

func (thousandsTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = thousands(ticks[i].Value)
		}
	}
	return ticks
}
