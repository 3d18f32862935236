package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/transmanager/transmanager/internal/scenario"
)

// chartRows is a fixed sweep on the services: the loop at two batch sizes
// and the relay at three worker counts, two batch sizes and two claim modes.
func chartRows() []benchRow {
	rows := []benchRow{
		{benchPoint: benchPoint{Impl: "loop", Batch: 100}, MsgsPerSec: 9000},
		{benchPoint: benchPoint{Impl: "loop", Batch: 500}, MsgsPerSec: 12000},
	}
	for _, w := range []int{1, 4, 16} {
		for _, b := range []int{100, 500} {
			for _, c := range []string{claimLease, claimLock} {
				rows = append(rows, benchRow{benchPoint: benchPoint{Impl: "relay", Workers: w, Batch: b, Claims: c},
					MsgsPerSec: float64(1000*w + b)})
			}
		}
	}
	return rows
}

func TestChartLines(t *testing.T) {
	t.Parallel()
	rows := chartRows()
	for _, tc := range []struct {
		name, want, x string
		labels        []string
		firstXs       []float64
	}{
		{"workers vary more", "", chartWorkers,
			[]string{"batch 100, leases", "batch 100, locks", "batch 500, leases", "batch 500, locks"}, []float64{1, 4, 16}},
		{"batch asked for", chartBatch, chartBatch,
			[]string{"loop", "workers 1, leases", "workers 1, locks", "workers 4, leases", "workers 4, locks", "workers 16, leases", "workers 16, locks"},
			[]float64{100, 500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := chartX(rows, tc.want)
			if x != tc.x {
				t.Fatalf("chartX = %q, want %q", x, tc.x)
			}
			lines := chartLines(rows, x, throughput)
			var labels []string
			for _, l := range lines {
				labels = append(labels, l.label)
			}
			if !slices.Equal(labels, tc.labels) {
				t.Fatalf("labels %q, want %q", labels, tc.labels)
			}
			var xs []float64
			for _, xy := range lines[0].xys {
				xs = append(xs, xy.X)
			}
			if !slices.Equal(xs, tc.firstXs) {
				t.Errorf("%s: x %v, want %v", lines[0].label, xs, tc.firstXs)
			}
		})
	}
	// Batch sizes vary more: one worker count, three batch sizes.
	rows = []benchRow{relayRow(1, 100, 1), relayRow(1, 500, 2), relayRow(1, 1000, 3)}
	if x := chartX(rows, ""); x != chartBatch {
		t.Errorf("chartX = %q, want batch", x)
	}
}

func relayRow(w, b int, rate float64) benchRow {
	return benchRow{benchPoint: benchPoint{Impl: "relay", Workers: w, Batch: b, Claims: claimLease}, MsgsPerSec: rate}
}

func TestWriteBenchChart(t *testing.T) {
	t.Parallel()
	r := &benchReport{Store: "PostgreSQL postgres://x", Broker: "NATS JetStream nats://y", Count: 3, Rows: chartRows()}
	for _, x := range []string{chartWorkers, chartBatch} {
		var buf bytes.Buffer
		if err := writeBenchChart(&buf, r, chartConfig{path: "out.png", x: x, width: 640, height: 400}); err != nil {
			t.Fatalf("%s: %v", x, err)
		}
		img, err := png.Decode(&buf)
		if err != nil {
			t.Fatalf("%s: decode: %v", x, err)
		}
		if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 400 {
			t.Errorf("%s: PNG is %dx%d, want 640x400", x, b.Dx(), b.Dy())
		}
	}
	// With latency runs, a second panel: commit → handled p99, without
	// the loop, which has none.
	timed := &benchReport{Store: r.Store, Broker: r.Broker, Count: 3, Rate: 1000, Rows: chartRows()}
	for i := range timed.Rows {
		if timed.Rows[i].Impl != "loop" {
			timed.Rows[i].Handled = &scenario.Percentiles{P99: float64(timed.Rows[i].Workers)}
		}
	}
	if lines := chartLines(timed.Rows, chartBatch, handledP99); len(lines) != 6 || lines[0].label == "loop" {
		t.Errorf("p99 lines: %d, first %q; want 6 relay lines", len(lines), lines[0].label)
	}
	var one, two bytes.Buffer
	for buf, rep := range map[*bytes.Buffer]*benchReport{&one: r, &two: timed} {
		if err := writeBenchChart(buf, rep, chartConfig{path: "out.png", width: 700, height: 900}); err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 700 || b.Dy() != 900 {
			t.Errorf("PNG is %dx%d, want 700x900", b.Dx(), b.Dy())
		}
	}
	if bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Error("the chart with latencies is the same as the one without")
	}
	var svg bytes.Buffer
	if err := writeBenchChart(&svg, timed, chartConfig{path: "out.svg", width: 800, height: 500}); err != nil || !strings.Contains(svg.String(), "p99") {
		t.Errorf("SVG with latencies has no p99 panel (%v)", err)
	}

	var buf bytes.Buffer
	if err := writeBenchChart(&buf, r, chartConfig{path: "out.SVG", width: 800, height: 500}); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, buf.Bytes())
	if !strings.Contains(buf.String(), "PostgreSQL") || !strings.Contains(buf.String(), "JetStream") {
		t.Errorf("the SVG's title does not name the store and the broker")
	}
	if err := writeBenchChart(&buf, &benchReport{}, chartConfig{path: "out.png", width: 800, height: 500}); err == nil {
		t.Errorf("a chart of no rows: no error")
	}
}

// checkSVG checks that b parses as XML with an <svg> root.
func checkSVG(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var root string
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("SVG does not parse as XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			root = se.Name.Local
			break
		}
	}
	if root != "svg" {
		t.Fatalf("root element <%s>, want <svg>", root)
	}
	var v struct {
		XMLName xml.Name
	}
	if err := xml.Unmarshal(b, &v); err != nil {
		t.Fatalf("SVG does not parse as XML: %v", err)
	}
}

// TestBenchChartEmbedded draws the charts of a tiny sweep on the embedded
// default.
func TestBenchChartEmbedded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	pngPath, svgPath := filepath.Join(dir, "out.png"), filepath.Join(dir, "out.svg")
	grid := []string{"bench", "-messages", "100", "-rate", "100", "-duration", "200ms", "-path-messages", "0", "-workers", "1,2", "-batch", "50", "-count", "1"}
	code, _, errOut := cli(ctx, append(grid, "-chart", pngPath, "-chart-size", "500x300")...)
	if code != exitOK || !strings.Contains(errOut, "chart written to "+pngPath) {
		t.Fatalf("bench -chart: exit %d: %s", code, errOut)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil || cfg.Width != 500 || cfg.Height != 300 {
		t.Errorf("PNG %dx%d (%v), want 500x300", cfg.Width, cfg.Height, err)
	}
	if code, _, errOut := cli(ctx, append(grid, "-csv", "-chart", svgPath, "-chart-x", "batch")...); code != exitOK {
		t.Fatalf("bench -chart: exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b)
}

func TestBenchChartUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-chart", "out.jpg"}, ".png or .svg"},
		{[]string{"-chart", "out"}, ".png or .svg"},
		{[]string{"-chart", "out.png", "-chart-x", "claims"}, "-chart-x"},
		{[]string{"-chart", "out.png", "-chart-size", "800"}, "-chart-size"},
		{[]string{"-chart", "out.png", "-chart-size", "0x500"}, "-chart-size"},
		{[]string{"-chart", "out.png", "-chart-size", "800xa"}, "-chart-size"},
	} {
		code, out, errOut := cli(context.Background(), append([]string{"bench"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("bench %v: exit %d, stderr %q, stdout %q; want exit 2 with %q", tc.args, code, errOut, out, tc.want)
		}
	}
}
