package main

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"

	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/txm"
)

// Claim modes of the relay, in the order the recommendation prefers them.
const (
	claimLease = "lease"
	claimLock  = "lock"
)

// benchTolerance is how far below the best median throughput a
// configuration may be and still be recommended.
const benchTolerance = 0.05

// benchPoint is one configuration of the sweep: the relay with Workers,
// Batch and Claims, or the strong hand-written loop (Impl "loop") at Batch.
type benchPoint struct {
	Impl    string `json:"impl"` // "relay" or "loop"
	Workers int    `json:"workers,omitempty"`
	Batch   int    `json:"batch"`
	Claims  string `json:"claims,omitempty"` // "lease" or "lock"; "" for the loop
}

func (p benchPoint) String() string {
	if p.Impl == scenario.ImplLoop {
		return fmt.Sprintf("loop batch %d", p.Batch)
	}
	return fmt.Sprintf("workers %d, batch %d, %ss", p.Workers, p.Batch, p.Claims)
}

// benchRow is a point's repetitions and their medians and spread.
type benchRow struct {
	benchPoint
	Runs          []scenario.DrainResult `json:"runs"`
	MsgsPerSec    float64                `json:"msgs_per_s"` // median
	MinMsgsPerSec float64                `json:"min_msgs_per_s"`
	MaxMsgsPerSec float64                `json:"max_msgs_per_s"`
	// VsLoop is the ratio of the median to the loop's at the same batch
	// size; 0 without a loop.
	VsLoop float64 `json:"vs_loop,omitempty"`
	// Medians of the CPU per message in µs: this process, the local
	// database server's processes (postgres, or mysqld/mariadbd: only the
	// one in use counts, the other is 0) and nats-server, and all together.
	RelayUS    float64 `json:"relay_cpu_us"`
	PostgresUS float64 `json:"postgres_cpu_us"`
	MySQLUS    float64 `json:"mysql_cpu_us,omitempty"`
	NATSUS     float64 `json:"nats_cpu_us"`
	TotalUS    float64 `json:"total_cpu_us"`
	// Allocs is the median of the heap objects this process allocated per
	// message.
	Allocs float64 `json:"allocs_per_msg"`
	// Latency holds the end-to-end runs at the report's Rate (none for the
	// loop, or with -rate 0); Ack and Handled are the medians of their
	// percentiles, and MinHandledP99 and MaxHandledP99 the range of their
	// commit → handled p99.
	Latency       []scenario.EndToEndResult `json:"latency_runs,omitempty"`
	Ack           *scenario.Percentiles     `json:"commit_to_ack,omitempty"`
	Handled       *scenario.Percentiles     `json:"commit_to_handled,omitempty"`
	MinHandledP99 float64                   `json:"min_handled_p99_ms,omitempty"`
	MaxHandledP99 float64                   `json:"max_handled_p99_ms,omitempty"`
}

// databaseUS is the median CPU per message of the database server in use.
func (r benchRow) databaseUS() float64 { return r.PostgresUS + r.MySQLUS }

// meets reports whether the row's median commit → handled p99 is within
// target; every row meets a zero target.
func (r benchRow) meets(target time.Duration) bool {
	return target == 0 || r.Handled != nil && r.Handled.P99 <= float64(target)/float64(time.Millisecond)
}

// benchPath is one path (write or consume) through the library and by
// hand, with the medians of their runs and the library's ratio to the
// baseline.
type benchPath struct {
	Path     string                `json:"path"`
	Messages int                   `json:"messages"`
	Library  []scenario.PathResult `json:"library_runs"`
	Baseline []scenario.PathResult `json:"baseline_runs"`
	// Medians: msgs/s with its range, CPU µs per message (this process
	// and, on the services, the database server and nats-server),
	// allocations.
	LibMsgsPerSec  float64 `json:"msgs_per_s"`
	LibMin         float64 `json:"min_msgs_per_s"`
	LibMax         float64 `json:"max_msgs_per_s"`
	BaseMsgsPerSec float64 `json:"baseline_msgs_per_s"`
	BaseMin        float64 `json:"baseline_min_msgs_per_s"`
	BaseMax        float64 `json:"baseline_max_msgs_per_s"`
	LibCPU         float64 `json:"cpu_us"`
	BaseCPU        float64 `json:"baseline_cpu_us"`
	LibAllocs      float64 `json:"allocs_per_msg"`
	BaseAllocs     float64 `json:"baseline_allocs_per_msg"`
	// Ratio is the library's median throughput over the baseline's; CPU
	// the library's CPU per message over the baseline's.
	Ratio    float64 `json:"ratio"`
	CPURatio float64 `json:"cpu_ratio"`
}

// benchMachine says where the sweep ran.
type benchMachine struct {
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Postgres   string `json:"postgres_version,omitempty"`
	MySQL      string `json:"mysql_version,omitempty"`
	NATS       string `json:"nats_version,omitempty"`
}

// benchRecommendation is the configuration the sweep recommends.
type benchRecommendation struct {
	benchPoint
	MsgsPerSec float64 `json:"msgs_per_s"`
	Best       float64 `json:"best_msgs_per_s"`
	Reason     string  `json:"reason"`
}

// benchReport is what bench prints; -json prints it as it is.
type benchReport struct {
	Machine        benchMachine         `json:"machine"`
	Store          string               `json:"store"`
	Database       string               `json:"database,omitempty"` // of the services: "postgres" or "mysql"; "" on the embedded default and in older reports
	Broker         string               `json:"broker"`
	Messages       int                  `json:"messages"`
	PayloadSize    int                  `json:"payload_bytes"`
	Keys           int                  `json:"keys,omitempty"`
	Codec          string               `json:"codec,omitempty"`
	Producers      int                  `json:"producers,omitempty"`
	Consumers      int                  `json:"consumers,omitempty"`
	Count          int                  `json:"count"`
	Rate           int                  `json:"rate,omitempty"` // of the latency runs; 0: none
	LatencySeconds float64              `json:"latency_seconds,omitempty"`
	P99Target      float64              `json:"p99_target_ms,omitempty"`
	Rows           []benchRow           `json:"rows"`
	Recommendation *benchRecommendation `json:"recommendation,omitempty"`
	// Paths compares the write and consume paths with their hand-written
	// baselines (none with -path-messages 0).
	Paths []benchPath `json:"paths,omitempty"`
	// NoRecommendation says why there is none, when there is none.
	NoRecommendation string `json:"no_recommendation,omitempty"`
}

// benchConfig is bench's parsed command line.
type benchConfig struct {
	postgres, nats string
	mysql          string // a DSN of github.com/go-sql-driver/mysql
	workers        []int
	batches        []int
	claims         []string
	messages       int
	count          int
	payload        int
	keys           int
	codec          string
	producers      int
	consumers      int
	pathMessages   int
	rate           int
	duration       time.Duration
	p99            time.Duration
	brokerLatency  time.Duration
	memory         bool
	json, csv      bool
	chart          chartConfig
	compare        string // a previous -json output
	save           string // also write the -json output to this file
}

// services reports whether the sweep runs on a database and NATS rather
// than on the embedded default.
func (c benchConfig) services() bool { return c.postgres != "" || c.mysql != "" }

// database names the services' database server as benchReport.Database
// does.
func (c benchConfig) database() string {
	switch {
	case c.mysql != "":
		return dbMySQL
	case c.postgres != "":
		return dbPostgres
	}
	return ""
}

// Database servers of the services (benchReport.Database).
const (
	dbPostgres = "postgres"
	dbMySQL    = "mysql"
)

// dbLabel is the name of the report's database server in its columns and
// notes.
func (r *benchReport) dbLabel() string {
	if r.Database == dbMySQL {
		return "mysqld"
	}
	return "postgres"
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "[-postgres URL -nats URL | -mysql DSN -nats URL] [-workers N,...] [-batch N,...] [-claims lease,lock] [-messages N] [-rate N] [-duration D] [-p99 D] [-count N] [-json | -csv] [-chart out.png|out.svg] [-compare old.json]", `
Size the relay. For every point of the grid (-workers × -batch × -claims),
-count times with the points' order rotating between repetitions, it
drains a backlog of -messages messages (throughput, and the CPU per
message of this process and, when they run on this machine, of the
database server and nats-server, and the allocations), then runs the
whole path at a steady -rate for -duration: producers commit typed
messages one per transaction, the relay publishes them, a consumer
handles them through an inbox. It prints per point the medians with their range: msgs/s, and the
p50, p90, p99 and max (HDR histograms) from commit to the broker's ack and
from commit to handled. It ends with a recommendation: the smallest
configuration (fewest workers, then smallest batch, leases before locks)
within 5% of the best median throughput among those whose commit →
handled p99 meets -p99, when given.

Without -postgres or -mysql and -nats it runs on the embedded default: a
SQLite file in a temporary directory and the in-process broker, no service
needed. With -postgres and -nats it works in a schema and a stream of its
own on those services, made afresh for every run, and drains with the
strong hand-written loop at every batch size as the baseline (the "vs
loop" column). With -mysql (MySQL or MariaDB, a go-sql-driver/mysql DSN
such as root@tcp(127.0.0.1:3306)/test?parseTime=true) and -nats it does
the same in a database of its own on that server, with the loop on a
minimal table of its own; there are no latency runs on MySQL (they need
PostgreSQL or the embedded default), so the recommendation rests on
throughput alone. Progress goes to stderr: a bar on a terminal, one line
per step otherwise.

-chart draws the median throughput and, under it, the commit → handled
p99 against workers or batch size (-chart-x), one line per remaining
setting. -compare reads an earlier -json output and prints, per point in
both runs, the old and new medians of throughput and p99, the change and
"~" when their [min–max] ranges overlap (no clear change).`)
	var cfg benchConfig
	fs.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL URL (with -nats)")
	fs.StringVar(&cfg.mysql, "mysql", "", "MySQL or MariaDB DSN (github.com/go-sql-driver/mysql), e.g. user:pass@tcp(host:3306)/db?parseTime=true (with -nats; no latency runs)")
	fs.StringVar(&cfg.nats, "nats", "", "NATS URL with JetStream (with -postgres or -mysql)")
	workers := fs.String("workers", "1,4", "relay workers (ProcessorConfig.Workers), comma-separated")
	batches := fs.String("batch", "100,500", "batch sizes (ProcessorConfig.BatchSize), comma-separated")
	claims := fs.String("claims", "", `claim modes, comma-separated: "lease" and, on PostgreSQL or MySQL, "lock" (default: lease on SQLite, lease,lock on PostgreSQL and MySQL)`)
	fs.IntVar(&cfg.messages, "messages", 20000, "messages per drain")
	fs.IntVar(&cfg.count, "count", 3, "repetitions of every point")
	fs.IntVar(&cfg.payload, "payload", 256, "payload bytes per message")
	fs.IntVar(&cfg.pathMessages, "path-messages", 3000, "messages of each write- and consume-path run against its hand-written baseline, 0 for none")
	fs.StringVar(&cfg.codec, "codec", scenario.CodecJSON, "the messages' codec in the latency and path runs: json or msgpack")
	fs.IntVar(&cfg.producers, "producers", 0, "goroutines committing the latency runs' messages (default 4 on the embedded default, 32 on the services)")
	fs.IntVar(&cfg.consumers, "consumers", 4, "messages the latency runs' consumer handles at once")
	fs.IntVar(&cfg.keys, "keys", 0, "partition keys the latency runs' messages spread over (0: none)")
	fs.IntVar(&cfg.rate, "rate", -1, "messages per second of the latency runs, 0 for none (default 500 on the embedded default, 1000 on PostgreSQL, none on MySQL)")
	fs.DurationVar(&cfg.duration, "duration", time.Second, "how long each latency run is measured, after a quarter of it as warm-up")
	fs.DurationVar(&cfg.p99, "p99", 0, "recommend only configurations whose commit → handled p99 is within this (e.g. 10ms)")
	fs.BoolVar(&cfg.memory, "memory", false, "instead of the SQLite file, the in-memory store (txm/memstore), with the in-process broker; no path runs (they need SQL)")
	fs.DurationVar(&cfg.brokerLatency, "broker-latency", 0, "embedded default only: how long each publish to the in-process broker waits, to stand for a network")
	fs.BoolVar(&cfg.json, "json", false, "print the report as JSON")
	fs.BoolVar(&cfg.csv, "csv", false, "print one CSV line per point")
	fs.StringVar(&cfg.chart.path, "chart", "", "also draw the median throughput to this file, a .png or a .svg")
	fs.StringVar(&cfg.chart.x, "chart-x", "", `the chart's x axis: "workers" or "batch" (default: the one with more values in the grid)`)
	chartSize := fs.String("chart-size", "800x800", "the chart's WIDTHxHEIGHT in pixels")
	fs.StringVar(&cfg.save, "save", "", "also write the report as -json prints it to this file, for a later -compare")
	fs.StringVar(&cfg.compare, "compare", "", "compare every point with a previous -json output (to stderr with -json or -csv)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := cfg.chart.check(*chartSize); err != nil {
		return err
	}
	var err error
	if cfg.workers, err = parseGrid("workers", *workers); err != nil {
		return err
	}
	if cfg.batches, err = parseGrid("batch", *batches); err != nil {
		return err
	}
	if err := cfg.check(*claims); err != nil {
		return err
	}
	var old *benchReport
	if cfg.compare != "" {
		if old, err = readBenchReport(cfg.compare); err != nil {
			return err
		}
	}
	report, err := sweep(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if cfg.save != "" {
		b, err := json.MarshalIndent(report, "", "  ")
		if err == nil {
			err = os.WriteFile(cfg.save, append(b, '\n'), 0o644)
		}
		if err != nil {
			return fmt.Errorf("bench: -save: %w", err)
		}
		fmt.Fprintf(stderr, "bench: report written to %s\n", cfg.save)
	}
	if cfg.chart.path != "" {
		if err := saveBenchChart(report, cfg.chart); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: chart written to %s\n", cfg.chart.path)
	}
	compareTo := stdout
	switch {
	case cfg.json:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
		compareTo = stderr
	case cfg.csv:
		err = writeBenchCSV(stdout, report)
		compareTo = stderr
	default:
		err = writeBenchTable(stdout, report)
		if old != nil {
			fmt.Fprintln(stdout)
		}
	}
	if err != nil || old == nil {
		return err
	}
	return writeBenchCompare(compareTo, cfg.compare, old, report)
}

// parseGrid parses a comma-separated list of distinct positive integers.
func parseGrid(name, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, usagef("bench: -%s %q: want positive integers separated by commas", name, s)
		}
		if slices.Contains(out, n) {
			return nil, usagef("bench: -%s %q: %d is given twice", name, s, n)
		}
		out = append(out, n)
	}
	return out, nil
}

// check completes cfg's defaults and reports contradictions as usage
// errors.
func (c *benchConfig) check(claims string) error {
	switch {
	case c.postgres != "" && c.mysql != "":
		return usagef("bench: give -postgres or -mysql, not both")
	case c.services() != (c.nats != ""):
		return usagef("bench: give -postgres or -mysql and -nats together, or none of them for the embedded default")
	case c.json && c.csv:
		return usagef("bench: give -json or -csv, not both")
	case c.count <= 0:
		return usagef("bench: -count %d: want at least 1", c.count)
	case c.messages <= 0:
		return usagef("bench: -messages %d: want a positive number", c.messages)
	case c.payload < 0:
		return usagef("bench: -payload %d: want 0 or more", c.payload)
	case c.brokerLatency < 0:
		return usagef("bench: -broker-latency %v: want 0 or more", c.brokerLatency)
	case c.memory && c.services():
		return usagef("bench: -memory is the in-memory store with the in-process broker, not -postgres or -mysql and -nats")
	case c.brokerLatency > 0 && c.services():
		return usagef("bench: -broker-latency is for the in-process broker; JetStream has its own")
	case c.pathMessages < 0:
		return usagef("bench: -path-messages %d: want 0 or more", c.pathMessages)
	case !slices.Contains(scenario.Codecs, c.codec):
		return usagef("bench: -codec %q: want one of %s", c.codec, strings.Join(scenario.Codecs, ", "))
	case c.producers < 0:
		return usagef("bench: -producers %d: want 0 or more", c.producers)
	case c.consumers <= 0:
		return usagef("bench: -consumers %d: want at least 1", c.consumers)
	case c.keys < 0:
		return usagef("bench: -keys %d: want 0 or more", c.keys)
	case c.rate < -1:
		return usagef("bench: -rate %d: want 0 or more", c.rate)
	case c.duration <= 0:
		return usagef("bench: -duration %v: want a positive duration", c.duration)
	case c.p99 < 0:
		return usagef("bench: -p99 %v: want a positive duration", c.p99)
	case c.mysql != "" && c.rate > 0:
		return usagef("bench: -rate %d: the latency runs need PostgreSQL or the embedded default; with -mysql there are none (leave -rate out)", c.rate)
	case c.mysql != "" && c.p99 > 0:
		return usagef("bench: -p99 needs latency runs, which need PostgreSQL or the embedded default; with -mysql there are none")
	case c.p99 > 0 && c.rate == 0:
		return usagef("bench: -p99 needs latency runs: leave -rate at its default or give it a positive value")
	}
	if c.rate == -1 {
		switch c.database() {
		case dbMySQL:
			c.rate = 0
		case dbPostgres:
			c.rate = 1000
		default:
			c.rate = 500
		}
	}
	if claims == "" {
		claims = claimLease
		if c.services() {
			claims = claimLease + "," + claimLock
		}
	}
	for f := range strings.SplitSeq(claims, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f != claimLease && f != claimLock:
			return usagef("bench: -claims %q: want lease, lock or both, separated by commas", claims)
		case f == claimLock && !c.services():
			return usagef("bench: -claims lock needs PostgreSQL or MySQL (-postgres or -mysql, with -nats); SQLite claims by leases")
		case slices.Contains(c.claims, f):
			return usagef("bench: -claims %q: %s is given twice", claims, f)
		}
		c.claims = append(c.claims, f)
	}
	return nil
}

// points returns the grid: the loop at every batch size first when on the
// services, then the relay's configurations.
func (c benchConfig) points() []benchPoint {
	var ps []benchPoint
	if c.services() {
		for _, b := range c.batches {
			ps = append(ps, benchPoint{Impl: scenario.ImplLoop, Batch: b})
		}
	}
	for _, w := range c.workers {
		for _, b := range c.batches {
			for _, cl := range c.claims {
				ps = append(ps, benchPoint{Impl: "relay", Workers: w, Batch: b, Claims: cl})
			}
		}
	}
	return ps
}

// drain runs one drain of p with n messages.
func (c benchConfig) drain(ctx context.Context, p benchPoint, n int) (scenario.DrainResult, error) {
	relay := txm.ProcessorConfig{Workers: p.Workers, LockClaims: p.Claims == claimLock}
	if !c.services() {
		r, err := scenario.DrainEmbedded(ctx, scenario.EmbeddedDrainSpec{Batch: p.Batch, Messages: n,
			PayloadSize: c.payload, Relay: relay, BrokerLatency: c.brokerLatency, Memory: c.memory})
		r.Workers = p.Workers
		return r, err
	}
	spec := scenario.DrainSpec{PostgresURL: c.postgres, MySQLURL: c.mysql, NATSURL: c.nats, Impl: p.Impl, Batch: p.Batch,
		Messages: n, PayloadSize: c.payload}
	if p.Impl != scenario.ImplLoop {
		spec.Relay = &relay
	}
	r, err := scenario.Drain(ctx, spec)
	r.Workers = p.Workers
	return r, err
}

// latency runs one end-to-end latency run of the relay point p (never on
// MySQL: check leaves the rate at 0 there).
func (c benchConfig) latency(ctx context.Context, p benchPoint) (scenario.EndToEndResult, error) {
	return scenario.EndToEnd(ctx, scenario.EndToEndSpec{PostgresURL: c.postgres, NATSURL: c.nats,
		Batch: p.Batch, Relay: txm.ProcessorConfig{Workers: p.Workers, LockClaims: p.Claims == claimLock},
		Rate: c.rate, Duration: c.duration, Warmup: c.duration / 4, Keys: c.keys, PayloadSize: c.payload,
		Codec: c.codec, Producers: c.producers, Consumers: c.consumers, BrokerLatency: c.brokerLatency, Memory: c.memory})
}

// hasLatency reports whether p gets latency runs: the relay's points, when
// the rate is not 0.
func (c benchConfig) hasLatency(p benchPoint) bool { return c.rate > 0 && p.Impl != scenario.ImplLoop }

// sweep runs every point count times, interleaved, after one uncounted
// warm-up drain, and summarizes them. A repetition of a relay point is a
// drain and, unless the rate is 0, a latency run.
func sweep(ctx context.Context, c benchConfig, progress io.Writer) (*benchReport, error) {
	report := &benchReport{
		Machine: benchMachine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
			GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH},
		Store:    "SQLite file (temporary directory)",
		Broker:   "in-process (async/memory)",
		Messages: c.messages, PayloadSize: c.payload, Keys: c.keys, Count: c.count,
		Codec: c.codec, Producers: c.producers, Consumers: c.consumers,
		P99Target: float64(c.p99) / float64(time.Millisecond),
	}
	if c.rate > 0 {
		report.Rate, report.LatencySeconds = c.rate, c.duration.Seconds()
	}
	if c.memory {
		report.Store = "in memory (txm/memstore)"
	}
	if c.brokerLatency > 0 {
		report.Broker += fmt.Sprintf(", %v per publish", c.brokerLatency)
	}
	switch report.Database = c.database(); report.Database {
	case dbPostgres:
		report.Store, report.Broker = "PostgreSQL "+redactURL(c.postgres), "NATS JetStream "+redactURL(c.nats)
		report.Machine.Postgres = dbVersion(ctx, "pgx", c.postgres, "SHOW server_version")
		report.Machine.NATS = natsVersion(c.nats)
	case dbMySQL:
		report.Store, report.Broker = "MySQL "+redactDSN(c.mysql), "NATS JetStream "+redactURL(c.nats)
		report.Machine.MySQL = dbVersion(ctx, "mysql", c.mysql, "SELECT VERSION()")
		report.Machine.NATS = natsVersion(c.nats)
	}
	points := c.points()
	drains := make([][]scenario.DrainResult, len(points))
	latencies := make([][]scenario.EndToEndResult, len(points))
	warm := points[len(points)-1]
	steps := 0
	for _, p := range points {
		steps++
		if c.hasLatency(p) {
			steps++
		}
	}
	bar := newProgress(progress, steps*c.count)
	bar.note(fmt.Sprintf("bench: %d points × %d repetitions of %d messages; warm-up: %s", len(points), c.count, c.messages, warm))
	if _, err := c.drain(ctx, warm, min(c.messages, 1000)); err != nil {
		return nil, fmt.Errorf("bench: warm-up, %s: %w", warm, err)
	}
	order := make([]int, len(points))
	for i := range order {
		order[i] = i
	}
	for rep := range c.count {
		for _, i := range scenario.Rotate(order, rep) {
			p := points[i]
			r, err := c.drain(ctx, p, c.messages)
			if err != nil {
				bar.done()
				return nil, fmt.Errorf("bench: repetition %d, %s: %w", rep+1, p, err)
			}
			drains[i] = append(drains[i], r)
			line := fmt.Sprintf("%-28s %9.0f msgs/s  cpu %5.1f µs/msg", p.String(), r.MsgsPerSec, r.TotalUS)
			if c.services() {
				line += fmt.Sprintf(" (relay %.1f, %s %.1f, nats %.1f)", r.RelayUS, report.dbLabel(), r.PostgresUS+r.MySQLUS, r.NATSUS)
			}
			bar.step(line)
			if !c.hasLatency(p) {
				continue
			}
			l, err := c.latency(ctx, p)
			if err != nil {
				bar.done()
				return nil, fmt.Errorf("bench: repetition %d, %s, latency at %d msgs/s: %w", rep+1, p, c.rate, err)
			}
			latencies[i] = append(latencies[i], l)
			bar.step(fmt.Sprintf("%-28s at %d msgs/s: commit → ack p99 %.1f ms, → handled p99 %.1f ms", p.String(), c.rate,
				l.Ack.P99, l.Handled.P99))
		}
	}
	bar.done()
	for i, p := range points {
		report.Rows = append(report.Rows, summarizeRuns(p, drains[i], latencies[i]))
	}
	loops := map[int]float64{}
	for _, row := range report.Rows {
		if row.Impl == scenario.ImplLoop {
			loops[row.Batch] = row.MsgsPerSec
		}
	}
	for i := range report.Rows {
		if base := loops[report.Rows[i].Batch]; base > 0 {
			report.Rows[i].VsLoop = report.Rows[i].MsgsPerSec / base
		}
	}
	report.Recommendation, report.NoRecommendation = recommend(report.Rows, c.p99)
	if c.pathMessages > 0 && !c.memory {
		paths, err := c.paths(ctx, progress)
		if err != nil {
			return nil, err
		}
		report.Paths = paths
	}
	return report, nil
}

// paths runs the write and the consume path, through the library and by
// hand, count times each, interleaved.
func (c benchConfig) paths(ctx context.Context, progress io.Writer) ([]benchPath, error) {
	type run struct{ path, impl string }
	var runs []run
	for _, p := range []string{scenario.PathWrite, scenario.PathConsume} {
		for _, impl := range []string{scenario.ImplLibrary, scenario.ImplBaseline} {
			runs = append(runs, run{p, impl})
		}
	}
	results := map[run][]scenario.PathResult{}
	bar := newProgress(progress, len(runs)*c.count)
	for rep := range c.count {
		for _, r := range scenario.Rotate(runs, rep) {
			res, err := scenario.Path(ctx, r.path, r.impl, scenario.PathSpec{PostgresURL: c.postgres, MySQLURL: c.mysql, NATSURL: c.nats,
				Messages: c.pathMessages, PayloadSize: c.payload, Codec: c.codec})
			if err != nil {
				bar.done()
				return nil, fmt.Errorf("bench: repetition %d: %w", rep+1, err)
			}
			results[r] = append(results[r], res)
			bar.step(fmt.Sprintf("%s path, %-8s %9.0f msgs/s  cpu %5.1f µs/msg", r.path, r.impl, res.MsgsPerSec, res.TotalUS))
		}
	}
	bar.done()
	rate := func(r scenario.PathResult) float64 { return r.MsgsPerSec }
	cpu := func(r scenario.PathResult) float64 { return r.TotalUS }
	allocs := func(r scenario.PathResult) float64 { return r.Allocs }
	var out []benchPath
	for _, p := range []string{scenario.PathWrite, scenario.PathConsume} {
		lib, base := results[run{p, scenario.ImplLibrary}], results[run{p, scenario.ImplBaseline}]
		bp := benchPath{Path: p, Messages: c.pathMessages, Library: lib, Baseline: base,
			LibMsgsPerSec: scenario.Median(lib, rate), BaseMsgsPerSec: scenario.Median(base, rate),
			LibCPU: scenario.Median(lib, cpu), BaseCPU: scenario.Median(base, cpu),
			LibAllocs: scenario.Median(lib, allocs), BaseAllocs: scenario.Median(base, allocs)}
		bp.LibMin, bp.LibMax = scenario.Spread(lib, rate)
		bp.BaseMin, bp.BaseMax = scenario.Spread(base, rate)
		if bp.BaseMsgsPerSec > 0 {
			bp.Ratio = bp.LibMsgsPerSec / bp.BaseMsgsPerSec
		}
		if bp.BaseCPU > 0 {
			bp.CPURatio = bp.LibCPU / bp.BaseCPU
		}
		out = append(out, bp)
	}
	return out, nil
}

func summarizeRuns(p benchPoint, rs []scenario.DrainResult, ls []scenario.EndToEndResult) benchRow {
	rate := func(r scenario.DrainResult) float64 { return r.MsgsPerSec }
	row := benchRow{benchPoint: p, Runs: rs, MsgsPerSec: scenario.Median(rs, rate), Latency: ls}
	row.MinMsgsPerSec, row.MaxMsgsPerSec = scenario.Spread(rs, rate)
	row.RelayUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.RelayUS })
	row.PostgresUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.PostgresUS })
	row.MySQLUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.MySQLUS })
	row.NATSUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.NATSUS })
	row.TotalUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.TotalUS })
	row.Allocs = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.Allocs })
	if len(ls) > 0 {
		row.Ack = medianPercentiles(ls, func(l scenario.EndToEndResult) scenario.Percentiles { return l.Ack })
		row.Handled = medianPercentiles(ls, func(l scenario.EndToEndResult) scenario.Percentiles { return l.Handled })
		row.MinHandledP99, row.MaxHandledP99 = scenario.Spread(ls, func(l scenario.EndToEndResult) float64 { return l.Handled.P99 })
	}
	return row
}

// medianPercentiles returns the median of each of the runs' percentiles.
func medianPercentiles(ls []scenario.EndToEndResult, f func(scenario.EndToEndResult) scenario.Percentiles) *scenario.Percentiles {
	med := func(g func(scenario.Percentiles) float64) float64 {
		return scenario.Median(ls, func(l scenario.EndToEndResult) float64 { return g(f(l)) })
	}
	return &scenario.Percentiles{
		Count: int64(med(func(p scenario.Percentiles) float64 { return float64(p.Count) })),
		P50:   med(func(p scenario.Percentiles) float64 { return p.P50 }),
		P90:   med(func(p scenario.Percentiles) float64 { return p.P90 }),
		P99:   med(func(p scenario.Percentiles) float64 { return p.P99 }),
		Max:   med(func(p scenario.Percentiles) float64 { return p.Max }),
	}
}

// recommend returns the smallest relay configuration whose median
// throughput is within benchTolerance of the best one among those whose
// median commit → handled p99 meets target (all, when target is 0): the
// fewest workers, then the smallest batch, leases before locks. When there
// is none it returns nil and why.
func recommend(rows []benchRow, target time.Duration) (*benchRecommendation, string) {
	var best, fastest *benchRow
	for i := range rows {
		r := &rows[i]
		if r.Impl == scenario.ImplLoop || r.MsgsPerSec <= 0 {
			continue
		}
		if fastest == nil || r.Handled != nil && (fastest.Handled == nil || r.Handled.P99 < fastest.Handled.P99) {
			fastest = r
		}
		if r.meets(target) && (best == nil || r.MsgsPerSec > best.MsgsPerSec) {
			best = r
		}
	}
	switch {
	case fastest == nil:
		return nil, "no relay configuration was measured."
	case best == nil && fastest.Handled == nil:
		return nil, fmt.Sprintf("no configuration has a latency to compare with -p99 %v.", target)
	case best == nil:
		return nil, fmt.Sprintf("no configuration met -p99 %v: the lowest commit → handled p99 was %.1f ms, with %s.",
			target, fastest.Handled.P99, fastest.benchPoint)
	}
	var pick *benchRow
	for i := range rows {
		r := &rows[i]
		if r.Impl == scenario.ImplLoop || !r.meets(target) || r.MsgsPerSec < (1-benchTolerance)*best.MsgsPerSec {
			continue
		}
		if pick == nil || smaller(r.benchPoint, pick.benchPoint) {
			pick = r
		}
	}
	rec := &benchRecommendation{benchPoint: pick.benchPoint, MsgsPerSec: pick.MsgsPerSec, Best: best.MsgsPerSec}
	among := ""
	if target > 0 {
		among = fmt.Sprintf(" among the configurations whose commit → handled p99 meets %v (its own: %.1f ms)", target, pick.Handled.P99)
	}
	if pick.benchPoint == best.benchPoint {
		rec.Reason = fmt.Sprintf("it has the best median throughput (%s msgs/s)%s and no smaller configuration comes within 5%% of it.",
			thousands(best.MsgsPerSec), among)
	} else {
		rec.Reason = fmt.Sprintf("it drains %s msgs/s, within 5%% of the best (%s msgs/s with %s)%s, with fewer resources: fewest workers, then smallest batch, leases before locks.",
			thousands(pick.MsgsPerSec), thousands(best.MsgsPerSec), best.benchPoint, among)
	}
	return rec, ""
}

// smaller orders configurations by workers, then batch size, then claim
// mode (leases first).
func smaller(a, b benchPoint) bool {
	claim := func(s string) int {
		if s == claimLock {
			return 1
		}
		return 0
	}
	return cmp.Or(cmp.Compare(a.Workers, b.Workers), cmp.Compare(a.Batch, b.Batch), cmp.Compare(claim(a.Claims), claim(b.Claims))) < 0
}

// dbVersion returns the version of the database server at dsn, opened
// with driver, by query; "" when it cannot be read.
func dbVersion(ctx context.Context, driver, dsn, query string) string {
	var v string
	if db, err := sql.Open(driver, dsn); err == nil {
		_ = db.QueryRowContext(ctx, query).Scan(&v)
		_ = db.Close()
	}
	return v
}

// natsVersion returns the version of the NATS server at url, "" when it
// cannot be read.
func natsVersion(url string) string {
	nc, err := nats.Connect(url, nats.Name("txm bench"))
	if err != nil {
		return ""
	}
	defer nc.Close()
	return nc.ConnectedServerVersion()
}

// redactDSN hides the password in a go-sql-driver/mysql DSN printed to the
// user, as redactURL does in a URL.
func redactDSN(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "?"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return cfg.FormatDSN()
}

func writeBenchTable(w io.Writer, r *benchReport) error {
	m := r.Machine
	fmt.Fprintf(w, "machine: %d cores (GOMAXPROCS %d), %s %s/%s", m.Cores, m.GOMAXPROCS, m.GoVersion, m.OS, m.Arch)
	switch {
	case r.Database == dbMySQL:
		fmt.Fprintf(w, ", MySQL %s, nats-server %s", cmp.Or(m.MySQL, "?"), cmp.Or(m.NATS, "?"))
	case m.Postgres != "" || m.NATS != "":
		fmt.Fprintf(w, ", PostgreSQL %s, nats-server %s", cmp.Or(m.Postgres, "?"), cmp.Or(m.NATS, "?"))
	}
	fmt.Fprintf(w, "\nstore: %s; broker: %s\n", r.Store, r.Broker)
	fmt.Fprintf(w, "throughput: a backlog of %d messages of %d B drained; medians of %d repetitions [min–max], points interleaved\n",
		r.Messages, r.PayloadSize, r.Count)
	if r.Rate > 0 {
		keys := ""
		if r.Keys > 0 {
			keys = fmt.Sprintf(" over %d partition keys", r.Keys)
		}
		if r.Codec != "" && r.Codec != scenario.CodecJSON {
			keys += ", " + r.Codec
		}
		if r.Consumers > 0 {
			keys += fmt.Sprintf(", %d consumers", r.Consumers)
		}
		fmt.Fprintf(w, "latency: %d msgs/s committed for %gs%s, each in its own transaction, relayed and handled through an inbox;\n"+
			"  ms from commit to the broker's ack and to handled (inbox committed), medians of the runs' HDR-histogram percentiles\n",
			r.Rate, r.LatencySeconds, keys)
	}
	fmt.Fprintln(w)
	services := r.Database != "" || m.Postgres != "" || m.MySQL != "" || m.NATS != "" || slices.ContainsFunc(r.Rows, func(x benchRow) bool { return x.Impl == scenario.ImplLoop })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "impl\tworkers\tbatch\tclaims\tmsgs/s\t[min–max]\t"
	if services {
		head += "vs loop\t"
	}
	if r.Rate > 0 {
		head += "ack p50\tp99\thandled p50\tp90\tp99\t[min–max]\tmax\t"
	}
	head += "cpu ms/1k msgs\t"
	if services {
		head += "relay\t" + r.dbLabel() + "\tnats\t"
	}
	fmt.Fprintln(tw, head+"allocs/msg\t")
	dash := func(ok bool, format string, v ...any) string {
		if !ok {
			return "-"
		}
		return fmt.Sprintf(format, v...)
	}
	for _, row := range r.Rows {
		workers, claims := strconv.Itoa(row.Workers), row.Claims
		if row.Impl == scenario.ImplLoop {
			workers, claims = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t[%s–%s]\t", row.Impl, workers, row.Batch, claims,
			thousands(row.MsgsPerSec), thousands(row.MinMsgsPerSec), thousands(row.MaxMsgsPerSec))
		if services {
			fmt.Fprintf(tw, "%s\t", dash(row.VsLoop > 0, "%.2f", row.VsLoop))
		}
		if r.Rate > 0 {
			if a, h := row.Ack, row.Handled; a != nil && h != nil {
				fmt.Fprintf(tw, "%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t[%.1f–%.1f]\t%.1f\t", a.P50, a.P99, h.P50, h.P90, h.P99,
					row.MinHandledP99, row.MaxHandledP99, h.Max)
			} else {
				fmt.Fprint(tw, "-\t-\t-\t-\t-\t-\t-\t")
			}
		}
		fmt.Fprintf(tw, "%.1f\t", row.TotalUS)
		if services {
			fmt.Fprintf(tw, "%.1f\t%.1f\t%.1f\t", row.RelayUS, row.databaseUS(), row.NATSUS)
		}
		fmt.Fprintf(tw, "%.0f\t\n", row.Allocs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	db := "postgres"
	if r.Database == dbMySQL {
		db = "mysqld/mariadbd"
	}
	fmt.Fprintf(w, "\ncpu: of the drain, this process's own and, where they run on this machine, of %s and nats-server; allocs: this process's heap objects.\n", db)
	if services {
		fmt.Fprintln(w, "Workers do not apply to the JetStream publisher, which gets each batch in waves (ProcessorConfig.Workers).")
	}
	if len(r.Paths) > 0 {
		fmt.Fprintf(w, "\npaths: %d messages by 4 goroutines, each in a transaction of its own, through the library and by hand on minimal tables of its own\n", r.Paths[0].Messages)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "path\tlibrary msgs/s\t[min–max]\tby hand msgs/s\t[min–max]\tratio\tcpu µs/msg\tby hand\tratio\tallocs/msg\tby hand\t")
		for _, p := range r.Paths {
			fmt.Fprintf(tw, "%s\t%s\t[%s–%s]\t%s\t[%s–%s]\t%.2f\t%.1f\t%.1f\t%.2f\t%.0f\t%.0f\t\n", p.Path,
				thousands(p.LibMsgsPerSec), thousands(p.LibMin), thousands(p.LibMax),
				thousands(p.BaseMsgsPerSec), thousands(p.BaseMin), thousands(p.BaseMax), p.Ratio,
				p.LibCPU, p.BaseCPU, p.CPURatio, p.LibAllocs, p.BaseAllocs)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "write: the order and its typed event via Outbox[T] in Store.InTx, against an INSERT of the order and of the JSON event;")
		insert := "INSERT … ON CONFLICT DO NOTHING"
		if r.Database == dbMySQL {
			insert = "INSERT IGNORE"
		}
		fmt.Fprintf(w, "consume: a typed Inbox[T] behind InboxHandler, against encoding/json and an %s of the ID, then the order.\n", insert)
	}
	if rec := r.Recommendation; rec != nil {
		fmt.Fprintf(w, "\nrecommended: %s: txm.ProcessorConfig{Workers: %d, BatchSize: %d, LockClaims: %t}\n",
			rec.benchPoint, rec.Workers, rec.Batch, rec.Claims == claimLock)
		fmt.Fprintf(w, "because %s\n", rec.Reason)
	} else if r.NoRecommendation != "" {
		fmt.Fprintf(w, "\nno recommendation: %s\n", r.NoRecommendation)
	}
	return nil
}

// dbLabelCSV is the CSV column of the database server's CPU: as before
// MySQL, postgres_cpu_us, but mysql_cpu_us on MySQL.
func (r *benchReport) dbLabelCSV() string {
	if r.Database == dbMySQL {
		return "mysql_cpu_us"
	}
	return "postgres_cpu_us"
}

func writeBenchCSV(w io.Writer, r *benchReport) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"impl", "workers", "batch", "claims", "msgs_per_s", "min_msgs_per_s", "max_msgs_per_s",
		"vs_loop", "ack_p50_ms", "ack_p99_ms", "handled_p50_ms", "handled_p90_ms", "handled_p99_ms", "handled_max_ms",
		"cpu_us_per_msg", "relay_cpu_us", r.dbLabelCSV(), "nats_cpu_us", "allocs_per_msg", "runs", "recommended"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	for _, row := range r.Rows {
		rec := r.Recommendation != nil && r.Recommendation.benchPoint == row.benchPoint
		lat := []string{"", "", "", "", "", ""}
		if a, h := row.Ack, row.Handled; a != nil && h != nil {
			lat = []string{f(a.P50), f(a.P99), f(h.P50), f(h.P90), f(h.P99), f(h.Max)}
		}
		rec0 := []string{row.Impl, strconv.Itoa(row.Workers), strconv.Itoa(row.Batch), row.Claims,
			f(row.MsgsPerSec), f(row.MinMsgsPerSec), f(row.MaxMsgsPerSec), f(row.VsLoop)}
		rec0 = append(rec0, lat...)
		rec0 = append(rec0, f(row.TotalUS), f(row.RelayUS), f(row.databaseUS()), f(row.NATSUS), f(row.Allocs),
			strconv.Itoa(len(row.Runs)), strconv.FormatBool(rec))
		_ = cw.Write(rec0)
	}
	cw.Flush()
	return cw.Error()
}

// thousands formats v rounded to an integer with commas between
// thousands.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
