package store

import (
	"context"
	"testing"
	"time"

	"github.com/transmanager/transmanager/internal/benchutil"
	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
)

// BenchmarkPath runs the write and consume paths that txm bench compares
// with their hand-written baselines (scenario.Path): the library and the
// baseline one after the other in each iteration, each on a store, tables
// and (on the services) a stream of its own. store=embedded is the
// embedded default and needs no service; store=postgres needs
// TXM_POSTGRES_URL and TXM_NATS_URL; store=mysql needs TXM_MYSQL_URL (a
// MySQL or MariaDB server) and TXM_NATS_URL. TXM_PATH_MESSAGES sets the
// messages per run (default 3000).
//
// Metrics, medians over the iterations: msgs/s and cpu-us/msg of the
// library, base-msgs/s and base-cpu-us/msg of the baseline, x-base (the
// library's throughput over the baseline's) and cpu-x-base (its CPU per
// message over the baseline's), and the CPU per message split into this
// process's (self-us/msg, base-self-us/msg) and the database server's
// (db-us/msg, base-db-us/msg); x-base-paired is the median of the
// library's throughput over the baseline's within each iteration.
// path=write/store=mysql/with=baseline-outbox runs
// scenario.ImplBaselineOutbox as well, the library's row written by
// hand into the store's table, and reports its figures with the prefix
// baseline-outbox- and x-baseline-outbox, the library's throughput over
// its; and scenario.ImplBaselineMessage, the same INSERT into a table of
// the message's columns and unique ID only, without the relay's state and
// index, with the prefix baseline-message-; and
// scenario.ImplBaselineNarrow, the message in a narrower table of its own
// (its name, metadata and send time in one JSON column), with the prefix
// baseline-narrow-; x-IMPL-paired is the median of the library's
// throughput over IMPL's within each iteration.
// path=write/store=mysql/with=baseline-prepared runs
// scenario.ImplBaselinePrepared, the baseline's event INSERT prepared on
// the server, with the prefix baseline-prepared-.
func BenchmarkPath(b *testing.B) {
	n := benchutil.EnvInt(b, "TXM_PATH_MESSAGES", 3000)
	for _, path := range []string{scenario.PathWrite, scenario.PathConsume} {
		b.Run("path="+path+"/store=embedded", func(b *testing.B) {
			benchPath(b, path, scenario.PathSpec{Dir: b.TempDir(), Messages: n, PayloadSize: 256})
		})
		b.Run("path="+path+"/store=postgres", func(b *testing.B) {
			benchPath(b, path, scenario.PathSpec{PostgresURL: testenv.URL(b, testenv.Postgres),
				NATSURL: testenv.URL(b, testenv.NATS), Messages: n, PayloadSize: 256})
		})
		b.Run("path="+path+"/store=mysql", func(b *testing.B) {
			benchPath(b, path, scenario.PathSpec{MySQLURL: testenv.URL(b, testenv.MySQL),
				NATSURL: testenv.URL(b, testenv.NATS), Messages: n, PayloadSize: 256})
		})
	}
	// The library's outbox row written by hand, its message's columns
	// alone and the message in a narrower row, beside the library and the
	// baseline: what the row and its table cost.
	b.Run("path="+scenario.PathWrite+"/store=mysql/with=baseline-outbox", func(b *testing.B) {
		benchPath(b, scenario.PathWrite, scenario.PathSpec{MySQLURL: testenv.URL(b, testenv.MySQL),
			NATSURL: testenv.URL(b, testenv.NATS), Messages: n, PayloadSize: 256}, scenario.ImplBaselineOutbox, scenario.ImplBaselineMessage, scenario.ImplBaselineNarrow)
	})
	// The baseline's event INSERT prepared on the server beside the text
	// one: the hand-written insert on its best terms.
	b.Run("path="+scenario.PathWrite+"/store=mysql/with=baseline-prepared", func(b *testing.B) {
		benchPath(b, scenario.PathWrite, scenario.PathSpec{MySQLURL: testenv.URL(b, testenv.MySQL),
			NATSURL: testenv.URL(b, testenv.NATS), Messages: n, PayloadSize: 256}, scenario.ImplBaselinePrepared)
	})
}

func benchPath(b *testing.B, path string, s scenario.PathSpec, more ...string) {
	var lib, base []scenario.PathResult
	extra := map[string][]scenario.PathResult{}
	for i := range b.N {
		// Alternate which runs first, so neither always gets the warmer
		// machine.
		impls := scenario.Rotate(append([]string{scenario.ImplLibrary, scenario.ImplBaseline}, more...), i)
		for _, impl := range impls {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			r, err := scenario.Path(ctx, path, impl, s)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			switch impl {
			case scenario.ImplLibrary:
				lib = append(lib, r)
			case scenario.ImplBaseline:
				base = append(base, r)
			default:
				extra[impl] = append(extra[impl], r)
			}
		}
	}
	rate := func(r scenario.PathResult) float64 { return r.MsgsPerSec }
	cpu := func(r scenario.PathResult) float64 { return r.TotalUS }
	self := func(r scenario.PathResult) float64 { return r.SelfUS }
	db := func(r scenario.PathResult) float64 { return r.PostgresUS + r.MySQLUS }
	// paired is the median over the iterations of rs's throughput over
	// the baseline's in the same iteration: steadier than the ratio of
	// the medians when the machine's speed drifts during a run.
	paired := func(rs []scenario.PathResult) float64 {
		ratios := make([]float64, len(rs))
		for i, r := range rs {
			ratios[i] = r.MsgsPerSec / base[i].MsgsPerSec
		}
		return scenario.Median(ratios, func(x float64) float64 { return x })
	}
	for impl, rs := range extra {
		b.ReportMetric(scenario.Median(rs, rate), impl+"-msgs/s")
		b.ReportMetric(paired(rs), impl+"-x-base-paired")
		b.ReportMetric(scenario.Median(rs, cpu), impl+"-cpu-us/msg")
		b.ReportMetric(scenario.Median(rs, self), impl+"-self-us/msg")
		b.ReportMetric(scenario.Median(rs, db), impl+"-db-us/msg")
		b.ReportMetric(scenario.Median(lib, rate)/scenario.Median(rs, rate), "x-"+impl)
		over := make([]float64, len(rs))
		for i, r := range rs {
			over[i] = lib[i].MsgsPerSec / r.MsgsPerSec
		}
		b.ReportMetric(scenario.Median(over, func(x float64) float64 { return x }), "x-"+impl+"-paired")
	}
	b.ReportMetric(scenario.Median(lib, rate), "msgs/s")
	b.ReportMetric(scenario.Median(lib, cpu), "cpu-us/msg")
	b.ReportMetric(scenario.Median(base, rate), "base-msgs/s")
	b.ReportMetric(scenario.Median(base, cpu), "base-cpu-us/msg")
	b.ReportMetric(scenario.Median(lib, self), "self-us/msg")
	b.ReportMetric(scenario.Median(base, self), "base-self-us/msg")
	b.ReportMetric(scenario.Median(lib, db), "db-us/msg")
	b.ReportMetric(scenario.Median(base, db), "base-db-us/msg")
	b.ReportMetric(scenario.Median(lib, rate)/scenario.Median(base, rate), "x-base")
	b.ReportMetric(paired(lib), "x-base-paired")
	b.ReportMetric(scenario.Median(lib, cpu)/scenario.Median(base, cpu), "cpu-x-base")
	b.ReportMetric(0, "ns/op") // an iteration is a run of each, of fixed size
}
