package drain

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/transmanager/transmanager/internal/benchutil"
	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
)

// The drain benchmarks run internal/scenario's drains, latency runs and
// embedded drains, the same functions `txm bench` and drainrun run. Run
// them under the benchmark lock, one at a time:
//
//	flock /tmp/txm-bench.lock go test ./bench/drain -run '^$' -bench 'DrainJetStream/batch=500/' -benchtime 1x -count 6
//	flock /tmp/txm-bench.lock go test ./bench/drain -run '^$' -bench 'DrainLatency' -benchtime 1x
//	go test ./bench/drain -run '^$' -bench 'DrainEmbedded' -benchtime 1x

// payloadSize is the size of every benchmark message's payload.
const payloadSize = 256

// drainTimeout bounds one drain or latency run, setup included.
const drainTimeout = 10 * time.Minute

var (
	drainBatches = []int{100, 500, 1000}
	drainWorkers = []int{1, 2, 4, 8, 16}
)

// drainImpl is one implementation of BenchmarkDrainJetStream: the strong
// loop when relay is nil, the library's relay with *relay otherwise
// (BatchSize is the sub-benchmark's).
type drainImpl struct {
	name  string
	relay *txm.ProcessorConfig
}

// drainImpls lists the loop first, so that every relay's ratio to it is
// measured in the same run.
func drainImpls() []drainImpl {
	impls := []drainImpl{{name: scenario.ImplLoop}}
	for _, w := range drainWorkers {
		impls = append(impls, drainImpl{fmt.Sprintf("relay-w%d", w), &txm.ProcessorConfig{Workers: w}})
	}
	return append(impls,
		// Without claiming ahead: one batch at a time, as the loop works.
		drainImpl{"relay-w4-inflight1", &txm.ProcessorConfig{Workers: 4, BatchesInFlight: 1}},
		// Locked claims (ProcessorConfig.LockClaims, the recommended
		// configuration): the batch's transaction is held until it is
		// settled, as in the loop.
		drainImpl{"relay-w2-lock", &txm.ProcessorConfig{Workers: 2, LockClaims: true}},
		drainImpl{"relay-w2-lock-inflight1", &txm.ProcessorConfig{Workers: 2, LockClaims: true, BatchesInFlight: 1}},
		drainImpl{"relay-w2-lock-inflight3", &txm.ProcessorConfig{Workers: 2, LockClaims: true, BatchesInFlight: 3}},
	)
}

// BenchmarkDrainJetStream drains a backlog of TXM_DRAIN_MESSAGES (default
// 100,000) messages of 256 bytes from PostgreSQL into a JetStream stream
// (file storage) with scenario.Drain, per batch size: first the strong
// hand-written loop on its own minimal table (impl=loop, scenario.Loop),
// then the relay on the library's table with 1–16 workers (relay-wN,
// leases, the default BatchesInFlight), with one batch in flight
// (relay-w4-inflight1) and with locked claims (relay-w2-lock, with 1 or 3
// batches in flight). Every iteration is one scenario.Drain: a schema and
// stream of its own, the backlog saved and the table settled outside the
// timer, the timer running over the drain alone, and the check that every
// message was published once and marked. TXM_DRAIN_KEYS=k gives the
// relay's messages k partition keys, round robin (default: none); the loop
// keeps no key order and ignores them.
//
// Metrics: msgs/s; x-loop, the relay's msgs/s as a multiple of the loop's
// at the same batch size in the same run (reported when the loop ran
// first, as it does unless -bench leaves it out); and the CPU per message
// of this process, of the local postgres processes and of the local
// nats-server, in microseconds (relay-us/msg, pg-us/msg, nats-us/msg),
// and the heap objects this process allocated per message (allocs/msg;
// medians over the iterations).
func BenchmarkDrainJetStream(b *testing.B) {
	n := benchutil.EnvInt(b, "TXM_DRAIN_MESSAGES", 100_000)
	keys := 0
	if os.Getenv("TXM_DRAIN_KEYS") != "" {
		keys = benchutil.EnvInt(b, "TXM_DRAIN_KEYS", 0)
	}
	pgURL, natsURL := testenv.URL(b, testenv.Postgres), testenv.URL(b, testenv.NATS)
	for _, batch := range drainBatches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var loopRate float64
			for _, impl := range drainImpls() {
				b.Run("impl="+impl.name, func(b *testing.B) {
					spec := scenario.DrainSpec{PostgresURL: pgURL, NATSURL: natsURL, Impl: impl.name,
						Batch: batch, Messages: n, PayloadSize: payloadSize, Keys: keys, Relay: impl.relay}
					rate := benchDrain(b, n, func(ctx context.Context, timed func() func()) (scenario.DrainResult, error) {
						spec.Timed = timed
						return scenario.Drain(ctx, spec)
					})
					switch {
					case impl.relay == nil:
						loopRate = rate
					case loopRate > 0:
						b.ReportMetric(rate/loopRate, "x-loop")
					}
				})
			}
		})
	}
}

// BenchmarkDrainMySQL is BenchmarkDrainJetStream with the outbox in
// MySQL or MariaDB (TXM_MYSQL_URL): the strong loop is the one a user
// would write there (scenario.MySQLLoop: a minimal table,
// SELECT ... FOR UPDATE SKIP LOCKED, async publishes, DELETE, COMMIT).
func BenchmarkDrainMySQL(b *testing.B) {
	n := benchutil.EnvInt(b, "TXM_DRAIN_MESSAGES", 20_000)
	mysqlURL, natsURL := testenv.URL(b, testenv.MySQL), testenv.URL(b, testenv.NATS)
	for _, batch := range drainBatches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var loopRate float64
			for _, impl := range scenario.Impls { // the loop first
				b.Run("impl="+impl, func(b *testing.B) {
					spec := scenario.DrainSpec{MySQLURL: mysqlURL, NATSURL: natsURL, Impl: impl,
						Batch: batch, Messages: n, PayloadSize: payloadSize}
					rate := benchDrain(b, n, func(ctx context.Context, timed func() func()) (scenario.DrainResult, error) {
						spec.Timed = timed
						return scenario.Drain(ctx, spec)
					})
					if impl == scenario.ImplLoop {
						loopRate = rate
					} else if loopRate > 0 {
						b.ReportMetric(rate/loopRate, "x-loop")
					}
				})
			}
		})
	}
}

// benchDrain runs b.N drains of n messages; drain calls timed as its timed
// part starts and the function timed returns as it ends, so that the
// benchmark's timer covers the drains alone. It reports the metrics of
// BenchmarkDrainJetStream and returns msgs/s.
func benchDrain(b *testing.B, n int, drain func(ctx context.Context, timed func() func()) (scenario.DrainResult, error)) float64 {
	b.StopTimer()
	b.ResetTimer()
	timed := func() func() {
		b.StartTimer()
		return b.StopTimer
	}
	var rs []scenario.DrainResult
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		r, err := drain(ctx, timed)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	rate := float64(n) * float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.RelayUS }), "relay-us/msg")
	if scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.MySQLUS }) > 0 {
		b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.MySQLUS }), "mysql-us/msg")
	} else {
		b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.PostgresUS }), "pg-us/msg")
	}
	b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.NATSUS }), "nats-us/msg")
	b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.Allocs }), "allocs/msg")
	return rate
}

// BenchmarkDrainLatency measures commit → PubAck latency under a steady
// load with scenario.Latency, as drainrun -latency does: 32 producers
// commit TXM_DRAIN_RATE (default 3,000) messages per second in all, one
// per transaction with its NOTIFY, for TXM_DRAIN_SECONDS (default 10)
// after a 1s warm-up, while the implementation, woken by LISTEN on a
// connection of its own as a relay in another process would be, publishes
// them to JetStream with batches of 500. impl=loop is the strong loop
// (scenario.Loop with scenario.ListenAndDrain), relay-lock and
// relay-default the relay with and without locked claims.
// TXM_DRAIN_NOTIFY_INTERVAL sets the library producers'
// sqlstore.Config.NotifyInterval (a Go duration; negative: a NOTIFY with
// every save).
//
// Metrics, medians over the iterations: p50-ms, p90-ms, p99-ms, max-ms of
// the latency from the return of the producer's commit to the PubAck;
// max-gap-ms, the longest time between two PubAcks while a message waited
// for its own; msgs/s, the rate achieved; and p99-x-loop, the relay's p99
// as a multiple of the loop's in the same run.
func BenchmarkDrainLatency(b *testing.B) {
	pgURL, natsURL := testenv.URL(b, testenv.Postgres), testenv.URL(b, testenv.NATS)
	spec := scenario.LatencySpec{PostgresURL: pgURL, NATSURL: natsURL,
		Rate:           benchutil.EnvInt(b, "TXM_DRAIN_RATE", 3000),
		Duration:       time.Duration(benchutil.EnvInt(b, "TXM_DRAIN_SECONDS", 10)) * time.Second,
		Warmup:         time.Second,
		Batch:          500,
		NotifyInterval: benchutil.EnvDuration(b, "TXM_DRAIN_NOTIFY_INTERVAL", 0),
		PayloadSize:    payloadSize,
	}
	var loopP99 float64
	for _, impl := range scenario.Impls { // the loop first
		b.Run("impl="+impl, func(b *testing.B) {
			var rs []scenario.LatencyResult
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
				s := spec
				s.Impl = impl
				r, err := scenario.Latency(ctx, s)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				rs = append(rs, r)
			}
			med := func(f func(scenario.LatencyResult) float64) float64 { return scenario.Median(rs, f) }
			p99 := med(func(r scenario.LatencyResult) float64 { return r.P99 })
			b.ReportMetric(med(func(r scenario.LatencyResult) float64 { return r.P50 }), "p50-ms")
			b.ReportMetric(med(func(r scenario.LatencyResult) float64 { return r.P90 }), "p90-ms")
			b.ReportMetric(p99, "p99-ms")
			b.ReportMetric(med(func(r scenario.LatencyResult) float64 { return r.Max }), "max-ms")
			b.ReportMetric(med(func(r scenario.LatencyResult) float64 { return r.MaxGap }), "max-gap-ms")
			b.ReportMetric(med(func(r scenario.LatencyResult) float64 { return r.Achieved }), "msgs/s")
			b.ReportMetric(0, "ns/op") // an iteration's time is its fixed duration
			switch {
			case impl == scenario.ImplLoop:
				loopP99 = p99
			case loopP99 > 0:
				b.ReportMetric(p99/loopP99, "p99-x-loop")
			}
		})
	}
}

// BenchmarkDrainEmbedded drains the embedded default with
// scenario.DrainEmbedded, as `txm bench` without services does: a backlog
// of TXM_DRAIN_EMBEDDED_MESSAGES (default 20,000) messages of 256 bytes in
// a SQLite file, drained by the relay into the in-process broker
// (async/memory), per workers and batch size (with leases: locked claims
// need PostgreSQL).
// TXM_DRAIN_BROKER_LATENCY (a Go duration, default 0) makes every publish
// wait that long first, to stand for a broker over a network. It needs no
// service. The hand-written baseline of this path, a minimal relay loop on
// the same SQLite file and a simulated broker, is BenchmarkRelayBaseline in
// bench/relay.
//
// Metrics: msgs/s; relay-us/msg and allocs/msg, the CPU and heap objects
// of this process per message (medians over the iterations).
func BenchmarkDrainEmbedded(b *testing.B) {
	n := benchutil.EnvInt(b, "TXM_DRAIN_EMBEDDED_MESSAGES", 20_000)
	latency := benchutil.EnvDuration(b, "TXM_DRAIN_BROKER_LATENCY", 0)
	for _, workers := range []int{1, 4} {
		for _, batch := range drainBatches {
			b.Run(fmt.Sprintf("workers=%d/batch=%d", workers, batch), func(b *testing.B) {
				spec := scenario.EmbeddedDrainSpec{Dir: b.TempDir(), Batch: batch, Messages: n, PayloadSize: payloadSize,
					Relay: txm.ProcessorConfig{Workers: workers}, BrokerLatency: latency}
				b.StopTimer()
				b.ResetTimer()
				var rs []scenario.DrainResult
				var took time.Duration
				for range b.N {
					ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
					r, err := scenario.DrainEmbedded(ctx, spec)
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					rs = append(rs, r)
					took += time.Duration(r.Seconds * float64(time.Second))
				}
				b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "msgs/s")
				b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.RelayUS }), "relay-us/msg")
				b.ReportMetric(scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.Allocs }), "allocs/msg")
				b.ReportMetric(float64(took.Nanoseconds())/float64(b.N), "ns/op") // the drains' time, not the fills'
			})
		}
	}
}

// BenchmarkEndToEnd runs scenario.EndToEnd, the whole path at a steady
// rate: producers commit TXM_E2E_RATE (default 1,000) messages per second,
// one per transaction through a typed txm.Outbox, for TXM_DRAIN_SECONDS
// (default 10) after a 1s warm-up; the relay (batches of 500, locked claims
// on PostgreSQL) publishes them; a consumer handles them through its inbox
// and a typed txm.Inbox. store=embedded is the embedded default (a SQLite
// file and the in-process broker) and needs no service; store=postgres runs
// on TXM_POSTGRES_URL and TXM_NATS_URL and skips without them. It has no
// hand-written baseline: the drain and latency benchmarks above measure the
// relay's part against the strong loop.
//
// Metrics, medians over the iterations: ack-p50-ms … ack-max-ms, commit →
// the broker's acknowledgement as the relay sees it; handled-p50-ms …
// handled-max-ms, commit → the consumer's inbox transaction committed;
// msgs/s, the rate achieved.
func BenchmarkEndToEnd(b *testing.B) {
	base := scenario.EndToEndSpec{
		Batch:       500,
		Rate:        benchutil.EnvInt(b, "TXM_E2E_RATE", 1000),
		Duration:    time.Duration(benchutil.EnvInt(b, "TXM_DRAIN_SECONDS", 10)) * time.Second,
		Warmup:      time.Second,
		PayloadSize: payloadSize,
	}
	b.Run("store=embedded", func(b *testing.B) {
		s := base
		s.Dir = b.TempDir()
		benchEndToEnd(b, s)
	})
	b.Run("store=postgres", func(b *testing.B) {
		s := base
		s.PostgresURL, s.NATSURL = testenv.URL(b, testenv.Postgres), testenv.URL(b, testenv.NATS)
		s.Relay = txm.ProcessorConfig{LockClaims: true}
		benchEndToEnd(b, s)
	})
}

func benchEndToEnd(b *testing.B, s scenario.EndToEndSpec) {
	var rs []scenario.EndToEndResult
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		r, err := scenario.EndToEnd(ctx, s)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	med := func(f func(scenario.EndToEndResult) float64) float64 { return scenario.Median(rs, f) }
	for _, p := range []struct {
		name string
		of   func(scenario.EndToEndResult) scenario.Percentiles
	}{
		{"ack", func(r scenario.EndToEndResult) scenario.Percentiles { return r.Ack }},
		{"handled", func(r scenario.EndToEndResult) scenario.Percentiles { return r.Handled }},
	} {
		b.ReportMetric(med(func(r scenario.EndToEndResult) float64 { return p.of(r).P50 }), p.name+"-p50-ms")
		b.ReportMetric(med(func(r scenario.EndToEndResult) float64 { return p.of(r).P90 }), p.name+"-p90-ms")
		b.ReportMetric(med(func(r scenario.EndToEndResult) float64 { return p.of(r).P99 }), p.name+"-p99-ms")
		b.ReportMetric(med(func(r scenario.EndToEndResult) float64 { return p.of(r).Max }), p.name+"-max-ms")
	}
	b.ReportMetric(med(func(r scenario.EndToEndResult) float64 { return r.Achieved }), "msgs/s")
	b.ReportMetric(0, "ns/op") // an iteration's time is its fixed duration
}
