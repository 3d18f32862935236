package drain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
)

// TestDrainBaselines checks what the drain and latency benchmarks measure,
// in short runs: the strong loop and every relay configuration of
// scenario.Impls publish every message of a backlog once and mark it
// (scenario.Drain checks this after each drain), with and without
// partition keys for the relay, every message committed
// under a steady load reaches JetStream (scenario.Latency waits for every
// PubAck), and the loop woken by LISTEN alone drains what producers commit
// while it waits.
func TestDrainBaselines(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after every env closes
	pgURL, natsURL := testenv.URL(t, testenv.Postgres), testenv.URL(t, testenv.NATS)
	const n = 1200
	for _, impl := range scenario.Impls {
		t.Run("latency/"+impl, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := scenario.Latency(ctx, scenario.LatencySpec{PostgresURL: pgURL, NATSURL: natsURL,
				Impl: impl, Rate: 400, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, PayloadSize: payloadSize})
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages < 100 || r.P50 <= 0 || r.P99 < r.P50 || r.Max < r.P99 {
				t.Fatalf("result %+v: want about 200 messages and ordered percentiles", r)
			}
		})
		t.Run("drain/"+impl, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			timed := 0
			r, err := scenario.Drain(ctx, scenario.DrainSpec{PostgresURL: pgURL, NATSURL: natsURL,
				Impl: impl, Batch: 500, Messages: n, PayloadSize: payloadSize,
				Timed: func() func() { timed++; return func() { timed++ } }})
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages != n || r.MsgsPerSec <= 0 || r.RelayUS <= 0 {
				t.Fatalf("result %+v: want %d messages, a rate and the relay's CPU", r, n)
			}
			if timed != 2 {
				t.Fatalf("the timed hook and its end ran %d times in all, want 2 (once each)", timed)
			}
		})
	}
	// With partition keys (TXM_DRAIN_KEYS), the relay keeps each key in
	// order and still drains everything.
	t.Run("drain/"+scenario.ImplRelayLock+"/keys", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := scenario.Drain(ctx, scenario.DrainSpec{PostgresURL: pgURL, NATSURL: natsURL,
			Impl: scenario.ImplRelayLock, Batch: 500, Messages: n, PayloadSize: payloadSize, Keys: 10})
		if err != nil {
			t.Fatal(err)
		}
		if r.Messages != n || r.MsgsPerSec <= 0 {
			t.Fatalf("result %+v: want %d messages and a rate", r, n)
		}
	})
	t.Run("listen", func(t *testing.T) { testListenLoop(t, pgURL, natsURL, n) })
}

// TestDrainBaselinesMySQL checks the drains of BenchmarkDrainMySQL in
// short runs: the strong loop on its own table and on the library's, and
// every relay configuration publish every message of a backlog once and
// mark it, and the relay keeps partition keys in order on MySQL too.
func TestDrainBaselinesMySQL(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	mysqlURL, natsURL := testenv.URL(t, testenv.MySQL), testenv.URL(t, testenv.NATS)
	const n = 1200
	for _, keys := range []int{0, 10} {
		for _, impl := range append(slices.Clone(scenario.Impls), scenario.ImplLoopOutbox) {
			if keys > 0 && (impl == scenario.ImplLoop || impl == scenario.ImplLoopOutbox) {
				continue // the loop has no keys
			}
			t.Run(fmt.Sprintf("drain/%s/keys=%d", impl, keys), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				r, err := scenario.Drain(ctx, scenario.DrainSpec{MySQLURL: mysqlURL, NATSURL: natsURL,
					Impl: impl, Batch: 500, Messages: n, PayloadSize: payloadSize, Keys: keys})
				if err != nil {
					t.Fatal(err)
				}
				if r.Messages != n || r.MsgsPerSec <= 0 || r.RelayUS <= 0 || r.PostgresUS != 0 {
					t.Fatalf("result %+v: want %d messages, a rate, the relay's CPU and none of PostgreSQL's", r, n)
				}
			})
		}
	}
}

// testListenLoop runs the strong loop as the latency benchmark runs it
// (scenario.ListenAndDrain), with a poll of an hour so that only the
// producers' NOTIFY wakes it, and commits n messages in two rounds, the
// second once the loop has drained the first and waits.
func testListenLoop(t *testing.T, pgURL, natsURL string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := scenario.Open(ctx, pgURL, natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := e.CreateLoopTable(ctx); err != nil {
		t.Fatal(err)
	}
	loop, err := e.NewLoop(500)
	if err != nil {
		t.Fatal(err)
	}
	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	stopped := make(chan error, 1)
	go func() { stopped <- scenario.ListenAndDrain(loopCtx, e.URL, e.Schema, time.Hour, loop.Drain) }()

	payload := scenario.Payload(payloadSize)
	commit := func(k int) {
		t.Helper()
		// What a user writes: the inserts and the NOTIFY in one transaction.
		tx, err := e.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		for range k {
			if _, err := tx.Exec(ctx, "INSERT INTO "+scenario.LoopTable(e.Schema)+" (subject, payload) VALUES ($1, $2)", e.Topic, payload); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", e.Schema); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	drained := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			left, err := e.LoopUnpublished(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.StreamMessages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if left == 0 && got == uint64(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d messages in the stream and %d rows unpublished after 30s; want %d and 0", got, left, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The first round is drained whether or not its NOTIFY came before
	// the loop's LISTEN (the loop LISTENs, then drains once as it starts);
	// the second, committed while the loop waits, only a NOTIFY can wake
	// it for.
	commit(n / 2)
	drained(n / 2)
	time.Sleep(100 * time.Millisecond) // the loop has found nothing more and waits
	commit(n - n/2)
	drained(n)
	stop()
	if err := <-stopped; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("ListenAndDrain: %v", err)
	}
}

// TestDrainLoopOutboxNeedsMySQL checks that the loop on the library's
// table is refused, before any I/O, where it does not exist.
func TestDrainLoopOutboxNeedsMySQL(t *testing.T) {
	_, err := scenario.Drain(context.Background(), scenario.DrainSpec{PostgresURL: "postgres://nowhere",
		NATSURL: "nats://nowhere", Impl: scenario.ImplLoopOutbox, Batch: 10, Messages: 10})
	if err == nil || !strings.Contains(err.Error(), "MySQL only") {
		t.Fatalf("Drain(%s on PostgreSQL) = %v, want an error saying it runs on MySQL only", scenario.ImplLoopOutbox, err)
	}
}
