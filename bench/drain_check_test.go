package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
)

// TestDrainBaselines checks the hand-written loops that the drain and
// latency benchmarks measure the relay against: each publishes every
// message of the outbox to the stream once and marks it published, and the
// loop that waits on LISTEN is woken by another store's commits. The
// strong loop on its own table (scenario.Loop) and the relay run as
// drainrun runs them, which checks the same after each drain.
func TestDrainBaselines(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the env closes
	e := newPGJSEnv(t)
	const n = 1200
	for _, impl := range scenario.Impls {
		// The latency runs: every committed message reaches JetStream,
		// with only the producers' NOTIFY to wake the relay or loop.
		t.Run("drainrun-latency/"+impl, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := scenario.Latency(ctx, scenario.LatencySpec{PostgresURL: e.url, NATSURL: testenv.URL(t, testenv.NATS),
				Impl: impl, Rate: 400, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, PayloadSize: pgjsPayloadSize})
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages < 100 || r.P50 <= 0 || r.P99 < r.P50 || r.Max < r.P99 {
				t.Fatalf("result %+v: want about 200 messages and ordered percentiles", r)
			}
		})
		t.Run("drainrun/"+impl, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := scenario.Drain(ctx, scenario.DrainSpec{PostgresURL: e.url, NATSURL: testenv.URL(t, testenv.NATS),
				Impl: impl, Batch: 500, Messages: n, PayloadSize: pgjsPayloadSize})
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages != n || r.MsgsPerSec <= 0 || r.RelayUS <= 0 {
				t.Fatalf("result %+v: want %d messages, a rate and the relay's CPU", r, n)
			}
		})
	}

	for _, oneTx := range []bool{false, true} {
		t.Run(fmt.Sprintf("oneTx=%v", oneTx), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			e.fill(t, n)
			done, err := e.newLoop(e.js, 500, oneTx, nil).drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if done != n {
				t.Fatalf("the loop published %d messages, want %d", done, n)
			}
			e.check(t, n)
		})
	}

	t.Run("listen", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.reset(t)
		times := newPGJSAckTimes(n)
		js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncAckHandler(times.onAck))
		if err != nil {
			t.Fatal(err)
		}
		loopCtx, stop := context.WithCancel(ctx)
		stopped := make(chan error, 1)
		// An hour's poll: only the NOTIFY of the producer's commits wakes it.
		go func() { stopped <- e.listenLoop(loopCtx, e.newLoop(js, 500, true, times), time.Hour) }()
		producer := e.newStore(t, false) // its saves NOTIFY
		confirmed := func(want int, within time.Duration) {
			t.Helper()
			deadline := time.Now().Add(within)
			for times.count() < want {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d messages confirmed after %v", times.count(), want, within)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		half := pgjsMessages(e.topic, n/2)
		if _, err := producer.Outbox().SaveMany(ctx, half); err != nil {
			t.Fatal(err)
		}
		confirmed(n/2, 30*time.Second)
		time.Sleep(100 * time.Millisecond) // the loop has drained the outbox and waits
		if _, err := producer.Outbox().SaveMany(ctx, pgjsMessages(e.topic, n-n/2)); err != nil {
			t.Fatal(err)
		}
		confirmed(n, 30*time.Second)
		// A batch is confirmed before it is marked: let the last marks land.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var pending int
			if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+e.outbox+" WHERE state <> 'published'").Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d messages still unmarked", pending)
			}
			time.Sleep(5 * time.Millisecond)
		}
		stop()
		if err := <-stopped; err != nil {
			t.Fatalf("listenLoop: %v", err)
		}
		e.check(t, n)
	})
}
