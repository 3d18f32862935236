package scenario

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
)

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	p := h.Percentiles()
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > want*0.002 {
			t.Errorf("%s = %.3f ms, want %.0f ms (±0.2%%)", name, got, want)
		}
	}
	if p.Count != 1000 {
		t.Errorf("count %d, want 1000", p.Count)
	}
	near("p50", p.P50, 500)
	near("p90", p.P90, 900)
	near("p99", p.P99, 990)
	near("max", p.Max, 1000)

	other := NewHistogram()
	other.Record(-time.Second) // clamped to the smallest value
	other.Record(time.Hour)    // clamped to the largest
	h.Merge(other)
	if got := h.Percentiles(); got.Count != 1002 || got.Max < 599_000 {
		t.Errorf("after merge: %+v, want 1002 values and a max of about 10 minutes", got)
	}
}

// checkEndToEnd asserts what every end-to-end result must hold.
func checkEndToEnd(t *testing.T, r EndToEndResult, rate int, d time.Duration) {
	t.Helper()
	want := int(float64(rate) * d.Seconds())
	if r.Messages < want*9/10 || r.Messages > want+rate/10+1 {
		t.Errorf("measured %d messages, want about %d", r.Messages, want)
	}
	for name, p := range map[string]Percentiles{"ack": r.Ack, "handled": r.Handled} {
		if p.Count != int64(r.Messages) {
			t.Errorf("%s: %d values, want one per measured message (%d)", name, p.Count, r.Messages)
		}
		if !(p.P50 > 0 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.Max) {
			t.Errorf("%s: percentiles out of order: %+v", name, p)
		}
	}
	if r.Achieved <= 0 {
		t.Errorf("achieved rate %v", r.Achieved)
	}
}

func TestEndToEndEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rate, d = 200, 500 * time.Millisecond
	r, err := EndToEnd(ctx, EndToEndSpec{Dir: t.TempDir(), Batch: 50, Rate: rate, Duration: d,
		Warmup: 100 * time.Millisecond, Keys: 8, PayloadSize: 128, BrokerLatency: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkEndToEnd(t, r, rate, d)
	mp, err := EndToEnd(ctx, EndToEndSpec{Dir: t.TempDir(), Batch: 50, Rate: rate, Duration: d, Codec: CodecMsgpack, Consumers: 4})
	if err != nil {
		t.Fatalf("msgpack, 4 consumers: %v", err)
	}
	checkEndToEnd(t, mp, rate, d)
	mem, err := EndToEnd(ctx, EndToEndSpec{Memory: true, Batch: 50, Rate: rate, Duration: d, Keys: 4})
	if err != nil {
		t.Fatalf("memory store: %v", err)
	}
	checkEndToEnd(t, mem, rate, d)
	// Every publish waits a millisecond before the broker takes it.
	if r.Ack.P50 < 1 {
		t.Errorf("commit → ack p50 %.3f ms, below the broker's 1 ms latency", r.Ack.P50)
	}
}

func TestEndToEndServices(t *testing.T) {
	pg := testenv.URL(t, testenv.Postgres)
	ns := testenv.URL(t, testenv.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const rate, d = 300, time.Second
	for _, lock := range []bool{false, true} {
		r, err := EndToEnd(ctx, EndToEndSpec{PostgresURL: pg, NATSURL: ns, Batch: 100, Rate: rate, Duration: d,
			Warmup: 200 * time.Millisecond, Producers: 8, Relay: txm.ProcessorConfig{LockClaims: lock}})
		if err != nil {
			t.Fatalf("LockClaims %t: %v", lock, err)
		}
		checkEndToEnd(t, r, rate, d)
	}
}

func TestEndToEndRejectsBadSpecs(t *testing.T) {
	for _, s := range []EndToEndSpec{
		{Batch: 10, Rate: 0, Duration: time.Second},
		{Batch: 10, Rate: 10, Duration: time.Second, Codec: "xml"},
		{PostgresURL: "postgres://x", NATSURL: "nats://x", Memory: true, Batch: 10, Rate: 10, Duration: time.Second},
		{Batch: 0, Rate: 10, Duration: time.Second},
		{PostgresURL: "postgres://x", Batch: 10, Rate: 10, Duration: time.Second},
		{PostgresURL: "postgres://x", NATSURL: "nats://x", BrokerLatency: time.Millisecond, Batch: 10, Rate: 10, Duration: time.Second},
	} {
		if _, err := EndToEnd(context.Background(), s); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
}
