package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
)

// The PostgreSQL -> JetStream benchmarks on real services: how fast the
// relay drains a backlog next to a hand-written pgx + jetstream loop on the
// same rows, and how long a committed message takes to reach JetStream when
// the relay is woken by LISTEN/NOTIFY. They skip unless TXM_POSTGRES_URL
// and TXM_NATS_URL are set. bench/README.md has the commands and the
// figures; run them under the benchmark lock:
//
//	flock /tmp/txm-bench.lock go test ./bench -run '^$' -bench 'DrainJetStream/batch=500/' -benchtime 1x -count 6
//	flock /tmp/txm-bench.lock go test ./bench -run '^$' -bench 'DrainLatency' -benchtime 1x

var (
	pgjsBatches = []int{100, 500, 1000}
	pgjsWorkers = []int{1, 2, 4, 8, 16}
)

// BenchmarkDrainJetStream drains TXM_DRAIN_MESSAGES (default 100,000)
// messages of 256 bytes from the PostgreSQL outbox to a JetStream stream
// (file storage), per batch size: first the hand-written loop (the
// baseline, impl=baseline: a lease written by the claim, two transactions
// per batch), then the same loop in one transaction per batch with row
// locks as the lease (impl=baseline-tx), then the relay with each worker count
// (impl=relay-wN, default BatchesInFlight: it claims the next batch while it
// publishes one), then the relay with 4 workers and BatchesInFlight 1
// (impl=relay-w4-inflight1: one batch at a time, like the baseline), then
// the relay with 2 workers and locked claims (impl=relay-w2-lock,
// ProcessorConfig.LockClaims; -inflight1 and -inflight3 set its
// BatchesInFlight). Each iteration fills the outbox with the store's SaveMany
// outside the timer; the timer covers the drain only, up to the last
// MarkPublished. The msgs/s metric is the one to read. TXM_DRAIN_KEYS=k
// gives the messages k partition keys, round robin (default: none); the
// hand-written loops ignore them.
func BenchmarkDrainJetStream(b *testing.B) {
	n := pgjsEnvInt(b, "TXM_DRAIN_MESSAGES", 100_000)
	e := newPGJSEnv(b)
	for _, batch := range pgjsBatches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.Run("impl=baseline", func(b *testing.B) {
				pgjsBenchDrain(b, e, n, func() { e.drainBaseline(b, n, batch) })
			})
			b.Run("impl=baseline-tx", func(b *testing.B) {
				pgjsBenchDrain(b, e, n, func() { e.drainBaselineTx(b, n, batch) })
			})
			for _, w := range pgjsWorkers {
				b.Run(fmt.Sprintf("impl=relay-w%d", w), func(b *testing.B) {
					pgjsBenchDrain(b, e, n, func() { e.drainRelay(b, n, batch, w, 0, false, natsjs.PublisherConfig{}) })
				})
			}
			// Without claiming ahead: one batch at a time, as the
			// baseline works.
			b.Run("impl=relay-w4-inflight1", func(b *testing.B) {
				pgjsBenchDrain(b, e, n, func() { e.drainRelay(b, n, batch, 4, 1, false, natsjs.PublisherConfig{}) })
			})
			// Locked claims: the batch's transaction held until it is
			// settled, as in the one-transaction loop.
			b.Run("impl=relay-w2-lock", func(b *testing.B) {
				pgjsBenchDrain(b, e, n, func() { e.drainRelay(b, n, batch, 2, 0, true, natsjs.PublisherConfig{}) })
			})
			for _, inFlight := range []int{1, 3} {
				b.Run(fmt.Sprintf("impl=relay-w2-lock-inflight%d", inFlight), func(b *testing.B) {
					pgjsBenchDrain(b, e, n, func() { e.drainRelay(b, n, batch, 2, inFlight, true, natsjs.PublisherConfig{}) })
				})
			}
		})
	}
}

// pgjsBenchDrain runs b.N drains of n messages; drain starts and stops the
// timer around the drain itself.
func pgjsBenchDrain(b *testing.B, e *pgjsEnv, n int, drain func()) {
	b.StopTimer()
	b.ResetTimer()
	for range b.N {
		e.fill(b, n)
		drain()
		e.check(b, n)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkDrainLatency measures commit-to-PubAck latency under a steady
// load: a producer commits TXM_DRAIN_RATE messages per second (default
// 13,000; about half of the relay's peak drain rate is a useful setting,
// and bench/README.md shows how to measure that rate) in small
// transactions (store.InTx + SaveMany, one every 2ms) for TXM_DRAIN_SECONDS (default 10) after a 1s warm-up,
// while a relay with LISTEN/NOTIFY wake-ups (PollOnly false, the default
// 1s poll interval as a fallback only) publishes them to JetStream.
// TXM_DRAIN_INFLIGHT sets the relay's BatchesInFlight (default: the
// relay's default, 2).
//
// The latency of a message runs from the return of the producer's commit to
// the PubAck received by the relay's JetStream client (p50-ms, p90-ms,
// p99-ms, max-ms), and, as confirm-*-ms, to the return of the relay's
// PublishBatch call that confirmed it. wakeup=notify gives the relay a store
// of its own, so only PostgreSQL's NOTIFY wakes it, as for a relay in
// another process; wakeup=inprocess shares the producer's store, whose
// commits wake the relay directly. claims=lease is the relay's default,
// claims=lock runs it with ProcessorConfig.LockClaims. impl=baseline-tx is
// the reference measured the same way: the hand-written one-transaction
// loop of BenchmarkDrainJetStream (batch 500), woken by a LISTEN connection
// of its own, draining until a claim comes back empty (listenLoop).
func BenchmarkDrainLatency(b *testing.B) {
	for _, notify := range []bool{true, false} {
		name := "wakeup=notify"
		if !notify {
			name = "wakeup=inprocess"
		}
		for _, claims := range []string{"lease", "lock"} {
			b.Run(name+"/claims="+claims, func(b *testing.B) { pgjsBenchLatency(b, notify, claims) })
		}
	}
	b.Run("wakeup=notify/impl=baseline-tx", func(b *testing.B) { pgjsBenchLatency(b, true, "baseline-tx") })
}

func pgjsBenchLatency(b *testing.B, notify bool, impl string) {
	rate := pgjsEnvInt(b, "TXM_DRAIN_RATE", 13000)
	seconds := pgjsEnvInt(b, "TXM_DRAIN_SECONDS", 10)
	e := newPGJSEnv(b)
	var acks, confirms []time.Duration
	var produced, early int
	var elapsed time.Duration
	for range b.N {
		a, c, p, neg, took := pgjsLatencyRun(b, e, rate, time.Duration(seconds)*time.Second, notify, impl)
		acks, confirms = append(acks, a...), append(confirms, c...)
		produced, early, elapsed = produced+p, early+neg, elapsed+took
	}
	p50, p90, p99, mx := pgjsPercentiles(acks)
	b.ReportMetric(pgjsMillis(p50), "p50-ms")
	b.ReportMetric(pgjsMillis(p90), "p90-ms")
	b.ReportMetric(pgjsMillis(p99), "p99-ms")
	b.ReportMetric(pgjsMillis(mx), "max-ms")
	c50, c90, c99, cmx := pgjsPercentiles(confirms)
	b.ReportMetric(pgjsMillis(c50), "confirm-p50-ms")
	b.ReportMetric(pgjsMillis(c90), "confirm-p90-ms")
	b.ReportMetric(pgjsMillis(c99), "confirm-p99-ms")
	b.ReportMetric(pgjsMillis(cmx), "confirm-max-ms")
	b.ReportMetric(float64(produced)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
	if early > 0 {
		b.Logf("%d of %d PubAcks arrived before the producer recorded its commit (counted as 0)", early, produced)
	}
}

// pgjsLatencyRun runs one measured session: a fresh relay (impl "lease" or
// "lock") or hand-written loop ("baseline-tx"), a 1s warm-up, then d of
// paced commits. It returns the latencies of the measured messages, how
// many it committed, how many acks came before the recorded commit time,
// and how long the measured production took.
func pgjsLatencyRun(b *testing.B, e *pgjsEnv, rate int, d time.Duration, notify bool, impl string) (acks, confirms []time.Duration, produced, early int, took time.Duration) {
	b.Helper()
	e.reset(b)
	relayStore := e.newStore(b, false)
	producer := relayStore
	if notify {
		producer = e.newStore(b, false)
	}
	expected := rate * (int((d+time.Second)/time.Second) + 1)
	times := newPGJSAckTimes(expected)
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncAckHandler(times.onAck))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	relayCtx, stopRelay := context.WithCancel(ctx)
	stopped := make(chan struct{})
	phases := &pgjsPhases{}
	var run func(ctx context.Context) error
	if impl == "baseline-tx" {
		l := e.newLoop(js, 500, true, times)
		phases = &l.phases
		run = func(ctx context.Context) error { return e.listenLoop(ctx, l, time.Second) }
	} else {
		pub := &pgjsTimingPublisher{next: natsjs.NewPublisher(js, natsjs.PublisherConfig{}), times: times, phases: phases}
		out := &pgjsCountingOutbox{Outbox: relayStore.Outbox(), phases: phases, times: times, target: 1 << 62, done: make(chan struct{})}
		relay, err := txm.NewOutboxProcessorWithConfig(pub, out, txm.ProcessorConfig{
			BatchSize: 500, Lease: pgjsLease, Logger: pgjsDiscardLogger(), BatchesInFlight: pgjsEnvInt(b, "TXM_DRAIN_INFLIGHT", 0),
			LockClaims: impl == "lock",
		})
		if err != nil {
			b.Fatal(err)
		}
		run = relay.Start
	}
	var runErr error
	go func() {
		defer close(stopped)
		runErr = run(relayCtx)
	}()
	defer func() {
		stopRelay()
		<-stopped
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			b.Errorf("%s: %v", impl, runErr)
		}
	}()

	// The producer, paced by the clock: every 2ms it commits the messages
	// due by then in one transaction.
	committed := make(map[string]time.Time, expected)
	sent, total := 0, 0
	warmup := time.Second
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	var measureStart time.Time
	for {
		<-tick.C
		now := time.Since(start)
		if now >= warmup+d {
			break
		}
		if measureStart.IsZero() && now >= warmup {
			measureStart = time.Now()
		}
		due := int(float64(rate)*now.Seconds()) - sent
		if due <= 0 {
			continue
		}
		due = min(due, rate/10+1)
		msgs := pgjsMessages(e.topic, due)
		err := producer.InTx(ctx, func(ctx context.Context) error {
			_, err := producer.Outbox().SaveMany(ctx, msgs)
			return err
		})
		at := time.Now()
		if err != nil {
			b.Fatalf("producer: %v", err)
		}
		sent += due
		total += due
		if !measureStart.IsZero() {
			for _, m := range msgs {
				committed[m.ID()] = at
			}
		}
	}
	took = time.Since(measureStart)

	// Wait for the relay to confirm everything.
	deadline := time.Now().Add(time.Minute)
	for times.count() < total {
		select {
		case <-stopped:
			b.Fatalf("%s stopped: %v", impl, runErr)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("the relay confirmed %d of %d messages within a minute of the last commit", times.count(), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	times.mu.Lock()
	defer times.mu.Unlock()
	// The median latency of each second of commits shows whether the relay
	// kept up (flat) or fell behind (growing).
	perSecond := make([][]time.Duration, int(d/time.Second)+1)
	for id, c := range committed {
		if a, ok := times.acked[id]; ok {
			s := int(c.Sub(measureStart) / time.Second)
			perSecond[s] = append(perSecond[s], max(a.Sub(c), 0))
		}
	}
	var trend, tails []string
	for _, l := range perSecond {
		if len(l) > 0 {
			p50, _, p99, _ := pgjsPercentiles(l)
			trend = append(trend, fmt.Sprintf("%.1f", pgjsMillis(p50)))
			tails = append(tails, fmt.Sprintf("%.0f", pgjsMillis(p99)))
		}
	}
	b.Logf("median latency (ms) by second of commit: %s", strings.Join(trend, " "))
	b.Logf("p99 latency (ms) by second of commit: %s", strings.Join(tails, " "))
	b.Logf("relay: %v", phases)
	b.Logf("median of each step (ms): %s", pgjsSteps(committed, times))
	for id, c := range committed {
		a, ok := times.acked[id]
		if !ok {
			b.Fatalf("no PubAck recorded for message %s", id)
		}
		lat := a.Sub(c)
		if lat < 0 {
			early++
			lat = 0
		}
		acks = append(acks, lat)
		confirms = append(confirms, max(times.confirmed[id].Sub(c), 0))
	}
	return acks, confirms, len(committed), early, took
}

// pgjsSteps returns the median time of each step of the measured messages'
// way: from the commit to the start of the claim that took it (wake-up and
// the wait for the claim before), the claim, from its end to the start of
// the publish (the wait for the batch ahead), and the publish to the
// PubAck. times.mu must be held.
func pgjsSteps(committed map[string]time.Time, times *pgjsAckTimes) string {
	var wait, claim, handoff, publish []time.Duration
	for id, c := range committed {
		cl, ok1 := times.claimed[id]
		sent, ok2 := times.sent[id]
		acked, ok3 := times.acked[id]
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		wait = append(wait, max(cl[0].Sub(c), 0))
		claim = append(claim, cl[1].Sub(cl[0]))
		handoff = append(handoff, sent.Sub(cl[1]))
		publish = append(publish, acked.Sub(sent))
	}
	med := func(ds []time.Duration) float64 { p50, _, _, _ := pgjsPercentiles(ds); return pgjsMillis(p50) }
	p99 := func(ds []time.Duration) float64 { _, _, p, _ := pgjsPercentiles(ds); return pgjsMillis(p) }
	return fmt.Sprintf("commit→claim %.2f, claim %.2f, claim→publish %.2f, publish→PubAck %.2f (%d messages); p99 of each: %.1f, %.1f, %.1f, %.1f",
		med(wait), med(claim), med(handoff), med(publish), len(wait), p99(wait), p99(claim), p99(handoff), p99(publish))
}
