package bench

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// The relay benchmarks measure how many messages per second the relay
// (txm.Processor) drains from a pre-filled outbox, for every combination
// of store, publisher latency, workers and batch size, next to a
// hand-written minimal relay loop (the baseline) that does the same store
// and publisher work. RELAY.md has the command, the figures and the advice
// drawn from them. Run them one at a time on a quiet machine:
//
//	flock /tmp/txm-bench.lock go test ./bench -run '^$' -bench 'Relay' -benchtime 1x -count 3
//
// Each drain is one benchmark iteration; -benchtime 1x runs one drain per
// count, and the message count of each cell is sized so that it takes
// about a second (see cellMessages).

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
	for _, store := range relayStores {
		for _, lat := range relayLatencies {
			for _, workers := range relayWorkers {
				for _, batch := range relayBatches {
					c := relayCell{store: store, lat: lat, workers: workers, batch: batch}
					b.Run(c.name(), func(b *testing.B) { benchDrain(b, c, relay) })
				}
			}
		}
	}
}

// BenchmarkRelayKeyed measures the cost of per-key ordering: the same
// drain with messages spread over 1000 partition keys, which the relay
// keeps in order (one lane per key) and the baseline ignores.
func BenchmarkRelayKeyed(b *testing.B) {
	for _, relay := range []bool{true, false} {
		impl := "relay"
		if !relay {
			impl = "baseline"
		}
		for _, store := range relayStores {
			for _, workers := range []int{4, 16} {
				for _, batch := range []int{100, 500} {
					c := relayCell{store: store, lat: time.Millisecond, workers: workers, batch: batch, keys: 1000}
					b.Run("impl="+impl+"/"+c.name(), func(b *testing.B) { benchDrain(b, c, relay) })
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

func benchDrain(b *testing.B, c relayCell, relay bool) {
	n := cellMessages(c)
	var total time.Duration
	for range b.N {
		b.StopTimer()
		took, err := runDrainTimed(b, c, n, relay)
		if err != nil {
			b.Fatal(err)
		}
		total += took
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "msgs/s")
	b.ReportMetric(float64(n), "msgs/drain")
}

// runDrainTimed runs one drain with the benchmark timer running only
// during the drain.
func runDrainTimed(b *testing.B, c relayCell, n int, relay bool) (time.Duration, error) {
	b.Helper()
	s := newRelayStore(b, c.store)
	fill(b, s, relayMessages(n, c.keys))
	pub := newLatencyPublisher(c.lat, n)
	defer pub.close()
	runtime.GC() // the pre-fill's garbage is not the drain's to collect
	b.StartTimer()
	var took time.Duration
	if relay {
		took = drainRelay(b, s, pub, c)
	} else {
		took = drainBaseline(b, s, pub, c)
	}
	b.StopTimer()
	if took == 0 {
		return 0, errIncomplete
	}
	return took, nil
}

// cellMessages sizes a cell's backlog so that its drain takes about
// targetDrain: it estimates the throughput from the store's cost per
// message and the publishing capacity of the workers, then rounds up to
// whole batches, at least two.
func cellMessages(c relayCell) int {
	const targetDrain = 1.2 // seconds
	storeRate := map[string]float64{"mem": 400_000, "sqlite": 40_000}[c.store]
	maxN := map[string]int{"mem": 200_000, "sqlite": 40_000}[c.store]
	rate := storeRate
	if c.lat > 0 {
		pubRate := float64(c.workers) / (c.lat.Seconds() + 5e-6)
		rate = 1 / (1/storeRate + 1/pubRate)
	}
	n := int(rate * targetDrain)
	n = min(max(n, 2*c.batch, 1000), maxN)
	return (n + c.batch - 1) / c.batch * c.batch
}
