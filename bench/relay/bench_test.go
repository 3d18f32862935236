package relay

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/transmanager/transmanager/internal/benchutil"
)

// The relay benchmarks measure how many messages per second the relay
// (txm.Processor) drains from a pre-filled outbox, for every combination
// of store, publisher latency, workers and batch size, next to a
// hand-written minimal relay loop (the baseline) that does the same store
// and publisher work. bench/README.md has the commands and the advice
// drawn from them. Run them one at a time on a quiet machine:
//
//	flock /tmp/txm-bench.lock go test ./bench/relay -run '^$' -bench 'Relay(Baseline)?$' -benchtime 1x -count 6
//
// Each drain is one benchmark iteration; -benchtime 1x runs one drain per
// count, and the message count of each cell is sized so that it takes
// about TXM_RELAY_DRAIN (a Go duration, default 1.2s; see cellMessages).
// A short TXM_RELAY_DRAIN, such as 20ms, makes a quick smoke run of the
// whole matrix.

var (
	relayStores    = []string{"mem", "sqlite"}
	relayLatencies = []time.Duration{0, 100 * time.Microsecond, time.Millisecond}
	relayWorkers   = []int{1, 2, 4, 8, 16}
	relayBatches   = []int{50, 100, 500, 1000}
)

// BenchmarkRelay measures the relay: txm.NewOutboxProcessorWithConfig with
// the cell's Workers and BatchSize.
func BenchmarkRelay(b *testing.B) { benchRelayMatrix(b, true) }

// BenchmarkRelayBaseline measures the minimal loop (drainBaseline) on the
// same cells.
func BenchmarkRelayBaseline(b *testing.B) { benchRelayMatrix(b, false) }

func benchRelayMatrix(b *testing.B, relay bool) {
	fx := newRelayFixtures(b)
	for _, store := range relayStores {
		for _, lat := range relayLatencies {
			for _, workers := range relayWorkers {
				for _, batch := range relayBatches {
					c := relayCell{store: store, lat: lat, workers: workers, batch: batch}
					b.Run(c.name(), func(b *testing.B) { benchDrain(b, fx, c, relay) })
				}
			}
		}
	}
}

// BenchmarkRelayKeyed measures the cost of per-key ordering: the same
// drain with messages spread over 1000 partition keys, which the relay
// keeps in order (one lane per key) and the baseline ignores.
func BenchmarkRelayKeyed(b *testing.B) {
	fx := newRelayFixtures(b)
	for _, relay := range []bool{true, false} {
		impl := "relay"
		if !relay {
			impl = "baseline"
		}
		for _, store := range relayStores {
			for _, workers := range []int{4, 16} {
				for _, batch := range []int{100, 500} {
					c := relayCell{store: store, lat: time.Millisecond, workers: workers, batch: batch, keys: 1000}
					b.Run("impl="+impl+"/"+c.name(), func(b *testing.B) { benchDrain(b, fx, c, relay) })
				}
			}
		}
	}
}

// BenchmarkRelayInFlight measures the relay with 1, 2 (the default) and 4
// batches in flight: claiming ahead overlaps the store's round trips with
// publishing, but on SQLite the claim and the marking of the previous batch
// compete for the one write lock.
func BenchmarkRelayInFlight(b *testing.B) {
	fx := newRelayFixtures(b)
	for _, store := range relayStores {
		for _, lat := range []time.Duration{0, time.Millisecond} {
			for _, workers := range []int{1, 16} {
				for _, batch := range []int{50, 500} {
					for _, inflight := range []int{1, 2, 4} {
						c := relayCell{store: store, lat: lat, workers: workers, batch: batch, inflight: inflight}
						b.Run(fmt.Sprintf("%s/inflight=%d", c.name(), inflight), func(b *testing.B) { benchDrain(b, fx, c, true) })
					}
				}
			}
		}
	}
}

func (c relayCell) name() string {
	lat := "0"
	switch {
	case c.lat >= time.Millisecond:
		lat = fmt.Sprintf("%dms", c.lat/time.Millisecond)
	case c.lat > 0:
		lat = fmt.Sprintf("%dus", c.lat/time.Microsecond)
	}
	return fmt.Sprintf("store=%s/lat=%s/workers=%d/batch=%d", c.store, lat, c.workers, c.batch)
}

// defaultDrain is how long a cell's drain should take by default.
const defaultDrain = 1200 * time.Millisecond

func benchDrain(b *testing.B, fx *relayFixtures, c relayCell, relay bool) {
	n := cellMessages(c, benchutil.EnvDuration(b, "TXM_RELAY_DRAIN", defaultDrain))
	var d drainStats
	for range b.N {
		b.StopTimer()
		if err := runDrainTimed(b, fx, c, n, relay, &d); err != nil {
			b.Fatal(err)
		}
	}
	msgs := float64(n * b.N)
	b.ReportMetric(msgs/d.took.Seconds(), "msgs/s")
	b.ReportMetric(float64(n), "msgs/drain")
	b.ReportMetric(float64(d.allocs)/msgs, "allocs/msg")
	b.ReportMetric(float64(d.bytes)/msgs, "B/msg")
}

// drainStats adds up the drains of a cell: their time (Start to the last
// confirmation) and what the whole process allocated meanwhile.
type drainStats struct {
	took          time.Duration
	allocs, bytes uint64
}

// runDrainTimed runs one drain with the benchmark timer running only
// during the drain.
func runDrainTimed(b *testing.B, fx *relayFixtures, c relayCell, n int, relay bool, d *drainStats) error {
	b.Helper()
	s := fx.store(b, c.store, n, c.keys)
	pub := newLatencyPublisher(c.lat, n)
	defer pub.close()
	runtime.GC() // the pre-fill's garbage is not the drain's to collect
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.StartTimer()
	var took time.Duration
	if relay {
		took = drainRelay(b, s, pub, c)
	} else {
		took = drainBaseline(b, s, pub, c)
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	if took == 0 {
		return errIncomplete
	}
	d.took += took
	d.allocs += after.Mallocs - before.Mallocs
	d.bytes += after.TotalAlloc - before.TotalAlloc
	return nil
}

// cellMessages sizes a cell's backlog so that its drain takes about
// target: it estimates the throughput from the store's cost per message and
// the publishing capacity of the workers, then rounds up to the next of 1,
// 2 or 5 times a power of ten (at least two batches, and 1000 for the
// default target, less in proportion for a shorter one), which every batch
// size divides and which keeps the number of SQLite templates small.
func cellMessages(c relayCell, target time.Duration) int {
	storeRate := map[string]float64{"mem": 600_000, "sqlite": 40_000}[c.store]
	maxN := map[string]int{"mem": 200_000, "sqlite": 50_000}[c.store]
	rate := storeRate
	if c.lat > 0 {
		pubRate := float64(c.workers) / (c.lat.Seconds() + 5e-6)
		rate = 1 / (1/storeRate + 1/pubRate)
	}
	want := max(int(rate*target.Seconds()), 2*c.batch, int(1000*target/defaultDrain))
	for p := 100; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if n := m * p; n >= want || n >= maxN {
				return min(n, maxN)
			}
		}
	}
}
