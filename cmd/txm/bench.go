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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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
	// postgres and nats-server processes, and the three together.
	RelayUS    float64 `json:"relay_cpu_us"`
	PostgresUS float64 `json:"postgres_cpu_us"`
	NATSUS     float64 `json:"nats_cpu_us"`
	TotalUS    float64 `json:"total_cpu_us"`
}

// benchMachine says where the sweep ran.
type benchMachine struct {
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Postgres   string `json:"postgres_version,omitempty"`
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
	Broker         string               `json:"broker"`
	Messages       int                  `json:"messages"`
	PayloadSize    int                  `json:"payload_bytes"`
	Count          int                  `json:"count"`
	Rows           []benchRow           `json:"rows"`
	Recommendation *benchRecommendation `json:"recommendation,omitempty"`
}

// benchConfig is bench's parsed command line.
type benchConfig struct {
	postgres, nats string
	workers        []int
	batches        []int
	claims         []string
	messages       int
	count          int
	payload        int
	brokerLatency  time.Duration
	json, csv      bool
	chart          chartConfig
	compare        string // a previous -json output
}

func (c benchConfig) services() bool { return c.postgres != "" }

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "[-postgres URL -nats URL] [-workers N,...] [-batch N,...] [-claims lease,lock] [-messages N] [-count N] [-json | -csv] [-chart out.png|out.svg] [-compare old.json]", `
Size the relay: drain a backlog of -messages messages once per point of the
grid (-workers × -batch × -claims), -count times with the points' order
rotating between repetitions, and print per point the median throughput
with its range and the CPU per message of this process and, when they run
on this machine, of postgres and nats-server. It ends with a
recommendation: the smallest configuration (fewest workers, then smallest
batch, leases before locks) within 5% of the best median throughput.

Without -postgres and -nats it runs on the embedded default: a SQLite file
in a temporary directory and the in-process broker, no service needed.
With both it drains a schema and a stream of its own on those services,
and runs the strong hand-written loop at every batch size as the baseline
(the "vs loop" column). Progress goes to stderr, one line per drain.

-chart draws the median throughput against workers or batch size (-chart-x),
one line per remaining setting. -compare reads an earlier -json output and
prints, per point in both runs, the old and new medians, the change and "~"
when their [min–max] ranges overlap (no clear change).`)
	var cfg benchConfig
	fs.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL URL (with -nats)")
	fs.StringVar(&cfg.nats, "nats", "", "NATS URL with JetStream (with -postgres)")
	workers := fs.String("workers", "1,4", "relay workers (ProcessorConfig.Workers), comma-separated")
	batches := fs.String("batch", "100,500", "batch sizes (ProcessorConfig.BatchSize), comma-separated")
	claims := fs.String("claims", "", `claim modes, comma-separated: "lease" and, on PostgreSQL, "lock" (default: lease on SQLite, lease,lock on PostgreSQL)`)
	fs.IntVar(&cfg.messages, "messages", 20000, "messages per drain")
	fs.IntVar(&cfg.count, "count", 3, "repetitions of every point")
	fs.IntVar(&cfg.payload, "payload", 256, "payload bytes per message")
	fs.DurationVar(&cfg.brokerLatency, "broker-latency", 0, "embedded default only: how long each publish to the in-process broker waits, to stand for a network")
	fs.BoolVar(&cfg.json, "json", false, "print the report as JSON")
	fs.BoolVar(&cfg.csv, "csv", false, "print one CSV line per point")
	fs.StringVar(&cfg.chart.path, "chart", "", "also draw the median throughput to this file, a .png or a .svg")
	fs.StringVar(&cfg.chart.x, "chart-x", "", `the chart's x axis: "workers" or "batch" (default: the one with more values in the grid)`)
	chartSize := fs.String("chart-size", "800x500", "the chart's WIDTHxHEIGHT in pixels")
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
	case (c.postgres == "") != (c.nats == ""):
		return usagef("bench: give -postgres and -nats together, or neither for the embedded default")
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
	case c.brokerLatency > 0 && c.services():
		return usagef("bench: -broker-latency is for the in-process broker; JetStream has its own")
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
			return usagef("bench: -claims lock needs PostgreSQL (-postgres and -nats); SQLite claims by leases")
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
			PayloadSize: c.payload, Relay: relay, BrokerLatency: c.brokerLatency})
		r.Workers = p.Workers
		return r, err
	}
	spec := scenario.DrainSpec{PostgresURL: c.postgres, NATSURL: c.nats, Impl: p.Impl, Batch: p.Batch,
		Messages: n, PayloadSize: c.payload}
	if p.Impl != scenario.ImplLoop {
		spec.Relay = &relay
	}
	r, err := scenario.Drain(ctx, spec)
	r.Workers = p.Workers
	return r, err
}

// sweep runs every point count times, interleaved, after one uncounted
// warm-up drain, and summarizes them.
func sweep(ctx context.Context, c benchConfig, progress io.Writer) (*benchReport, error) {
	report := &benchReport{
		Machine: benchMachine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
			GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH},
		Store:    "SQLite file (temporary directory)",
		Broker:   "in-process (async/memory)",
		Messages: c.messages, PayloadSize: c.payload, Count: c.count,
	}
	if c.brokerLatency > 0 {
		report.Broker += fmt.Sprintf(", %v per publish", c.brokerLatency)
	}
	if c.services() {
		report.Store, report.Broker = "PostgreSQL "+redactURL(c.postgres), "NATS JetStream "+redactURL(c.nats)
		report.Machine.Postgres, report.Machine.NATS = serviceVersions(ctx, c.postgres, c.nats)
	}
	points := c.points()
	runs := make([][]scenario.DrainResult, len(points))
	warm := points[len(points)-1]
	fmt.Fprintf(progress, "bench: %d points × %d repetitions of %d messages; warm-up: %s\n", len(points), c.count, c.messages, warm)
	if _, err := c.drain(ctx, warm, min(c.messages, 1000)); err != nil {
		return nil, fmt.Errorf("bench: warm-up, %s: %w", warm, err)
	}
	order := make([]int, len(points))
	for i := range order {
		order[i] = i
	}
	for rep := range c.count {
		for k, i := range scenario.Rotate(order, rep) {
			r, err := c.drain(ctx, points[i], c.messages)
			if err != nil {
				return nil, fmt.Errorf("bench: repetition %d, %s: %w", rep+1, points[i], err)
			}
			runs[i] = append(runs[i], r)
			line := fmt.Sprintf("bench: %d/%d  %-28s %9.0f msgs/s  cpu %5.1f µs/msg", rep*len(points)+k+1, c.count*len(points),
				points[i].String(), r.MsgsPerSec, r.TotalUS)
			if c.services() {
				line += fmt.Sprintf(" (relay %.1f, postgres %.1f, nats %.1f)", r.RelayUS, r.PostgresUS, r.NATSUS)
			}
			fmt.Fprintln(progress, line)
		}
	}
	for i, p := range points {
		report.Rows = append(report.Rows, summarizeRuns(p, runs[i]))
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
	report.Recommendation = recommend(report.Rows)
	return report, nil
}

func summarizeRuns(p benchPoint, rs []scenario.DrainResult) benchRow {
	rate := func(r scenario.DrainResult) float64 { return r.MsgsPerSec }
	row := benchRow{benchPoint: p, Runs: rs, MsgsPerSec: scenario.Median(rs, rate)}
	row.MinMsgsPerSec, row.MaxMsgsPerSec = scenario.Spread(rs, rate)
	row.RelayUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.RelayUS })
	row.PostgresUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.PostgresUS })
	row.NATSUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.NATSUS })
	row.TotalUS = scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.TotalUS })
	return row
}

// recommend returns the smallest relay configuration whose median
// throughput is within benchTolerance of the best one: the fewest workers,
// then the smallest batch, leases before locks. Nil when no relay row has
// a throughput.
func recommend(rows []benchRow) *benchRecommendation {
	var best *benchRow
	for i := range rows {
		if r := &rows[i]; r.Impl != scenario.ImplLoop && r.MsgsPerSec > 0 && (best == nil || r.MsgsPerSec > best.MsgsPerSec) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	var pick *benchRow
	for i := range rows {
		r := &rows[i]
		if r.Impl == scenario.ImplLoop || r.MsgsPerSec < (1-benchTolerance)*best.MsgsPerSec {
			continue
		}
		if pick == nil || smaller(r.benchPoint, pick.benchPoint) {
			pick = r
		}
	}
	rec := &benchRecommendation{benchPoint: pick.benchPoint, MsgsPerSec: pick.MsgsPerSec, Best: best.MsgsPerSec}
	if pick.benchPoint == best.benchPoint {
		rec.Reason = fmt.Sprintf("it has the best median throughput (%s msgs/s) and no smaller configuration comes within 5%% of it.",
			thousands(best.MsgsPerSec))
	} else {
		rec.Reason = fmt.Sprintf("it drains %s msgs/s, within 5%% of the best (%s msgs/s with %s), with fewer resources: fewest workers, then smallest batch, leases before locks.",
			thousands(pick.MsgsPerSec), thousands(best.MsgsPerSec), best.benchPoint)
	}
	return rec
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

// serviceVersions returns the servers' versions, "" for one that cannot be
// read.
func serviceVersions(ctx context.Context, pgURL, natsURL string) (pg, ns string) {
	if db, err := sql.Open("pgx", pgURL); err == nil {
		_ = db.QueryRowContext(ctx, "SHOW server_version").Scan(&pg)
		_ = db.Close()
	}
	if nc, err := nats.Connect(natsURL, nats.Name("txm bench")); err == nil {
		ns = nc.ConnectedServerVersion()
		nc.Close()
	}
	return pg, ns
}

func writeBenchTable(w io.Writer, r *benchReport) error {
	m := r.Machine
	fmt.Fprintf(w, "machine: %d cores (GOMAXPROCS %d), %s %s/%s", m.Cores, m.GOMAXPROCS, m.GoVersion, m.OS, m.Arch)
	if m.Postgres != "" || m.NATS != "" {
		fmt.Fprintf(w, ", PostgreSQL %s, nats-server %s", cmp.Or(m.Postgres, "?"), cmp.Or(m.NATS, "?"))
	}
	fmt.Fprintf(w, "\nstore: %s; broker: %s\n", r.Store, r.Broker)
	fmt.Fprintf(w, "%d messages of %d B per drain; medians of %d repetitions [min–max], points interleaved\n\n", r.Messages, r.PayloadSize, r.Count)
	services := r.Machine.Postgres != "" || r.Machine.NATS != "" || slices.ContainsFunc(r.Rows, func(x benchRow) bool { return x.Impl == scenario.ImplLoop })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if services {
		fmt.Fprintln(tw, "impl\tworkers\tbatch\tclaims\tmsgs/s\t[min–max]\tvs loop\tcpu µs/msg\trelay\tpostgres\tnats\t")
	} else {
		fmt.Fprintln(tw, "impl\tworkers\tbatch\tclaims\tmsgs/s\t[min–max]\tcpu µs/msg (relay)\t")
	}
	for _, row := range r.Rows {
		workers, claims := strconv.Itoa(row.Workers), row.Claims
		if row.Impl == scenario.ImplLoop {
			workers, claims = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t[%s–%s]\t", row.Impl, workers, row.Batch, claims,
			thousands(row.MsgsPerSec), thousands(row.MinMsgsPerSec), thousands(row.MaxMsgsPerSec))
		if services {
			vs := "-"
			if row.VsLoop > 0 {
				vs = fmt.Sprintf("%.2f", row.VsLoop)
			}
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", vs, row.TotalUS, row.RelayUS, row.PostgresUS, row.NATSUS)
		} else {
			fmt.Fprintf(tw, "%.1f\t\n", row.RelayUS)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if services {
		fmt.Fprintln(w, "\nWorkers do not apply to the JetStream publisher, which gets each batch in waves (ProcessorConfig.Workers).")
	}
	if rec := r.Recommendation; rec != nil {
		fmt.Fprintf(w, "\nrecommended: %s: txm.ProcessorConfig{Workers: %d, BatchSize: %d, LockClaims: %t}\n",
			rec.benchPoint, rec.Workers, rec.Batch, rec.Claims == claimLock)
		fmt.Fprintf(w, "because %s\n", rec.Reason)
	}
	return nil
}

func writeBenchCSV(w io.Writer, r *benchReport) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"impl", "workers", "batch", "claims", "msgs_per_s", "min_msgs_per_s", "max_msgs_per_s",
		"vs_loop", "cpu_us_per_msg", "relay_cpu_us", "postgres_cpu_us", "nats_cpu_us", "runs", "recommended"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	for _, row := range r.Rows {
		rec := r.Recommendation != nil && r.Recommendation.benchPoint == row.benchPoint
		_ = cw.Write([]string{row.Impl, strconv.Itoa(row.Workers), strconv.Itoa(row.Batch), row.Claims,
			f(row.MsgsPerSec), f(row.MinMsgsPerSec), f(row.MaxMsgsPerSec), f(row.VsLoop),
			f(row.TotalUS), f(row.RelayUS), f(row.PostgresUS), f(row.NATSUS), strconv.Itoa(len(row.Runs)), strconv.FormatBool(rec)})
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
