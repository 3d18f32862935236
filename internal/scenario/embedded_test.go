package scenario

import (
	"context"
	"testing"
	"time"

	"github.com/transmanager/transmanager/txm"
)

func TestDrainEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name    string
		workers int
		latency time.Duration
	}{
		{"workers=1", 1, 0},
		{"workers=4/latency", 4, time.Microsecond},
		{"memory", 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := DrainEmbedded(ctx, EmbeddedDrainSpec{Dir: t.TempDir(), Batch: 50, Messages: 300, PayloadSize: 64,
				Relay: txm.ProcessorConfig{Workers: tc.workers}, BrokerLatency: tc.latency, Memory: tc.name == "memory"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages != 300 || r.Batch != 50 || r.MsgsPerSec <= 0 || r.PostgresUS != 0 || r.NATSUS != 0 {
				t.Errorf("result %+v", r)
			}
		})
	}
}

func TestMedianSpreadRotate(t *testing.T) {
	id := func(v float64) float64 { return v }
	for _, tc := range []struct {
		in             []float64
		median, lo, hi float64
	}{
		{nil, 0, 0, 0},
		{[]float64{3}, 3, 3, 3},
		{[]float64{4, 1, 3}, 3, 1, 4},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		lo, hi := Spread(tc.in, id)
		if m := Median(tc.in, id); m != tc.median || lo != tc.lo || hi != tc.hi {
			t.Errorf("%v: median %v, spread %v–%v; want %v, %v–%v", tc.in, m, lo, hi, tc.median, tc.lo, tc.hi)
		}
	}
	if got := Rotate([]int{1, 2, 3}, 4); len(got) != 3 || got[0] != 2 || got[2] != 1 {
		t.Errorf("Rotate: %v", got)
	}
}
