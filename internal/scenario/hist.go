package scenario

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Percentiles summarizes a latency distribution, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Histogram records latencies from 1 µs to 10 minutes with three
// significant digits (an HDR histogram: the error of every percentile is
// below 0.1%, whatever the value). It is not safe for concurrent use.
type Histogram struct{ h *hdrhistogram.Histogram }

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)}
}

// Record adds d, clamped to the histogram's range.
func (h *Histogram) Record(d time.Duration) {
	us := max(int64(d/time.Microsecond), 1)
	_ = h.h.RecordValue(min(us, h.h.HighestTrackableValue()))
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Percentiles returns h's count, p50, p90, p99 and maximum.
func (h *Histogram) Percentiles() Percentiles {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: h.h.TotalCount(),
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		Max:   ms(h.h.Max()),
	}
}
