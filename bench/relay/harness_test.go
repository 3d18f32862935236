package relay

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/txm"
)

// TestRelayDrain checks the harness behind the relay benchmarks: on both
// stores, the relay and the baseline publish every pre-filled message
// exactly once, leave nothing pending, and stop every goroutine they
// started (the relay's, the wait clock's, the store's).
func TestRelayDrain(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the stores close
	fx := newRelayFixtures(t)
	for _, store := range relayStores {
		for _, relay := range []bool{true, false} {
			for _, keys := range []int{0, 7} {
				c := relayCell{store: store, lat: 100 * time.Microsecond, workers: 4, batch: 50, keys: keys}
				t.Run(fmt.Sprintf("relay=%v/keys=%d/%s", relay, keys, c.name()), func(t *testing.T) {
					const n = 1000
					s := fx.store(t, c.store, n, c.keys)
					pub := newLatencyPublisher(c.lat, n)
					pub.record = true
					var took time.Duration
					if relay {
						took = drainRelay(t, s, pub, c)
					} else {
						took = drainBaseline(t, s, pub, c)
					}
					pub.close()
					if took <= 0 {
						t.Fatalf("drain time %v", took)
					}
					if len(pub.seen) != n {
						t.Errorf("published %d distinct messages, want %d", len(pub.seen), n)
					}
					for id, k := range pub.seen {
						if k != 1 {
							t.Errorf("message %s published %d times", id, k)
						}
					}
					st, err := s.(txm.StatsReporter).Stats(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					if st.Pending != 0 {
						t.Errorf("%d messages still pending after the drain", st.Pending)
					}
				})
			}
		}
	}
}

// TestWaitClock checks that waits end in deadline order, never early, and
// that a cancelled wait returns the context's error.
func TestWaitClock(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := newWaitClock()
	defer c.close()
	const d = 200 * time.Microsecond
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			start := time.Now()
			if err := c.wait(context.Background(), d); err != nil {
				errs <- err
				return
			}
			if took := time.Since(start); took < d {
				errs <- fmt.Errorf("wait ended after %v, before %v", took, d)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.wait(ctx, time.Hour); err != context.Canceled {
		t.Errorf("cancelled wait returned %v, want context.Canceled", err)
	}
	// The cancelled waiter stays queued for an hour; close must still
	// stop the clock's goroutine.
}

// TestCellMessages checks the sizing of the matrix: whole batches, at
// least two of them, bounded per store, at least 1000 messages for the
// default target, and no more for a shorter target.
func TestCellMessages(t *testing.T) {
	for _, store := range relayStores {
		for _, lat := range relayLatencies {
			for _, w := range relayWorkers {
				for _, batch := range relayBatches {
					c := relayCell{store: store, lat: lat, workers: w, batch: batch}
					n := cellMessages(c, defaultDrain)
					if n%batch != 0 || n < 2*batch || n < 1000 || n > 200_000 {
						t.Errorf("%s: %d messages", c.name(), n)
					}
					short := cellMessages(c, 20*time.Millisecond)
					if short%batch != 0 || short < 2*batch || short > n {
						t.Errorf("%s, 20ms: %d messages (%d for the default)", c.name(), short, n)
					}
				}
			}
		}
	}
}

// BenchmarkRelayWait measures the ways a simulated publisher can wait
// 100µs or 1ms, from 1 and 16 goroutines at once: the mean wait
// (mean-wait-us) and the waits per second all goroutines together achieve
// (waits/s; ideal: goroutines/latency). It is why the latency publisher uses
// waitClock: see its comment.
func BenchmarkRelayWait(b *testing.B) {
	waiters := map[string]func(*waitClock) func(time.Duration){
		"sleep": func(*waitClock) func(time.Duration) { return time.Sleep },
		"spin": func(*waitClock) func(time.Duration) {
			return func(d time.Duration) {
				for start := time.Now(); time.Since(start) < d; {
				}
			}
		},
		"clock": func(c *waitClock) func(time.Duration) {
			return func(d time.Duration) { _ = c.wait(context.Background(), d) }
		},
	}
	names := make([]string, 0, len(waiters))
	for name := range waiters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, d := range []time.Duration{100 * time.Microsecond, time.Millisecond} {
			for _, g := range []int{1, 16} {
				b.Run(fmt.Sprintf("how=%s/lat=%v/goroutines=%d", name, d, g), func(b *testing.B) {
					c := newWaitClock()
					defer c.close()
					wait := waiters[name](c)
					const perG = 200
					var total time.Duration
					var elapsed time.Duration
					for range b.N {
						var mu sync.Mutex
						var wg sync.WaitGroup
						runtime.GC()
						start := time.Now()
						for range g {
							wg.Go(func() {
								var sum time.Duration
								for range perG {
									t0 := time.Now()
									wait(d)
									sum += time.Since(t0)
								}
								mu.Lock()
								total += sum
								mu.Unlock()
							})
						}
						wg.Wait()
						elapsed += time.Since(start)
					}
					waits := float64(b.N * g * perG)
					b.ReportMetric(float64(total.Microseconds())/waits, "mean-wait-us")
					b.ReportMetric(waits/elapsed.Seconds(), "waits/s")
				})
			}
		}
	}
}
