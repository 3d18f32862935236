package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
)

func TestBenchUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-workers", "0"}, "-workers"},
		{[]string{"-workers", "1,x"}, "-workers"},
		{[]string{"-workers", "2,2"}, "given twice"},
		{[]string{"-batch", ""}, "-batch"},
		{[]string{"-batch", "100,,500"}, "-batch"},
		{[]string{"-claims", "leases"}, "-claims"},
		{[]string{"-claims", "lock"}, "needs PostgreSQL"},
		{[]string{"-claims", "lease,lease"}, "given twice"},
		{[]string{"-postgres", "postgres://x"}, "together"},
		{[]string{"-nats", "nats://x"}, "together"},
		{[]string{"-json", "-csv"}, "not both"},
		{[]string{"-count", "0"}, "-count"},
		{[]string{"-messages", "-5"}, "-messages"},
		{[]string{"-broker-latency", "1ms", "-postgres", "postgres://x", "-nats", "nats://x"}, "in-process"},
		{[]string{"-p99", "10ms", "-rate", "0"}, "needs latency runs"},
		{[]string{"-p99", "-1ms"}, "-p99"},
		{[]string{"-duration", "0s"}, "-duration"},
		{[]string{"-rate", "-5"}, "-rate"},
		{[]string{"-keys", "-1"}, "-keys"},
		{[]string{"-codec", "xml"}, "-codec"},
		{[]string{"-memory", "-postgres", "postgres://x", "-nats", "nats://x"}, "-memory"},
		{[]string{"-consumers", "0"}, "-consumers"},
		{[]string{"-producers", "-2"}, "-producers"},
		{[]string{"-path-messages", "-1"}, "-path-messages"},
		{[]string{"-mysql", "root@tcp(x:3306)/db"}, "together"},
		{[]string{"-mysql", "root@tcp(x:3306)/db", "-postgres", "postgres://x", "-nats", "nats://x"}, "not both"},
		{[]string{"-mysql", "root@tcp(x:3306)/db", "-nats", "nats://x", "-rate", "100"}, "need PostgreSQL or the embedded default"},
		{[]string{"-mysql", "root@tcp(x:3306)/db", "-nats", "nats://x", "-p99", "10ms"}, "need PostgreSQL or the embedded default"},
		{[]string{"-mysql", "root@tcp(x:3306)/db", "-nats", "nats://x", "-memory"}, "-memory"},
		{[]string{"-mysql", "root@tcp(x:3306)/db", "-nats", "nats://x", "-broker-latency", "1ms"}, "in-process"},
		{[]string{"-mysql", "root@tcp(x:3306)/db", "-nats", "nats://x", "-claims", "lock,locks"}, "-claims"},
		{[]string{"-workers", "1", "-bogus"}, "flag provided but not defined"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		code, out, errOut := cli(context.Background(), append([]string{"bench"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("bench %v: exit %d, stderr %q, stdout %q; want exit 2 with %q", tc.args, code, errOut, out, tc.want)
		}
	}
	if code, out, _ := cli(context.Background(), "bench", "-h"); code != exitOK || !strings.Contains(out, "-workers") {
		t.Errorf("bench -h: exit %d:\n%s", code, out)
	}
}

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
	}{
		{"app:s3cret@tcp(db.example:3306)/orders?parseTime=true", "app:xxxxx@tcp(db.example:3306)/orders?parseTime=true"},
		{"root@tcp(127.0.0.1:3306)/test?parseTime=true", "root@tcp(127.0.0.1:3306)/test?parseTime=true"},
		{"not a DSN", "?"},
	} {
		if got := redactDSN(tc.in); got != tc.want {
			t.Errorf("redactDSN(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseGrid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"1", []int{1}},
		{"1,2,4,8,16", []int{1, 2, 4, 8, 16}},
		{" 100, 500 ,1000", []int{100, 500, 1000}},
		{"0", nil},
		{"-1", nil},
		{"1.5", nil},
		{"1,", nil},
	} {
		got, err := parseGrid("batch", tc.in)
		if !slices.Equal(got, tc.want) || (err == nil) != (tc.want != nil) {
			t.Errorf("parseGrid(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestRecommend(t *testing.T) {
	t.Parallel()
	relay := func(w, b int, claims string, rate float64) benchRow {
		return benchRow{benchPoint: benchPoint{Impl: "relay", Workers: w, Batch: b, Claims: claims}, MsgsPerSec: rate}
	}
	// timed is a relay row with a commit → handled p99 in ms.
	timed := func(w, b int, claims string, rate, p99 float64) benchRow {
		r := relay(w, b, claims, rate)
		r.Handled = &scenario.Percentiles{P99: p99}
		return r
	}
	loop := func(b int, rate float64) benchRow {
		return benchRow{benchPoint: benchPoint{Impl: "loop", Batch: b}, MsgsPerSec: rate}
	}
	for _, tc := range []struct {
		name   string
		rows   []benchRow
		target time.Duration
		want   *benchPoint // nil: no recommendation
	}{
		{"none", nil, 0, nil},
		{"only the loop", []benchRow{loop(100, 1000)}, 0, nil},
		{"the best alone", []benchRow{relay(1, 100, "lease", 500), relay(4, 100, "lease", 1000)}, 0,
			&benchPoint{"relay", 4, 100, "lease"}},
		{"fewer workers within 5%", []benchRow{relay(4, 100, "lease", 1000), relay(1, 500, "lease", 960)}, 0,
			&benchPoint{"relay", 1, 500, "lease"}},
		{"exactly 5% below", []benchRow{relay(4, 100, "lease", 1000), relay(2, 100, "lease", 950)}, 0,
			&benchPoint{"relay", 2, 100, "lease"}},
		{"just over 5% below", []benchRow{relay(4, 100, "lease", 1000), relay(2, 100, "lease", 949)}, 0,
			&benchPoint{"relay", 4, 100, "lease"}},
		{"then the smaller batch", []benchRow{relay(2, 1000, "lock", 1000), relay(2, 500, "lock", 990), relay(2, 100, "lock", 900)}, 0,
			&benchPoint{"relay", 2, 500, "lock"}},
		{"leases before locks", []benchRow{relay(1, 500, "lock", 1000), relay(1, 500, "lease", 970)}, 0,
			&benchPoint{"relay", 1, 500, "lease"}},
		{"workers before batch", []benchRow{relay(2, 100, "lease", 1000), relay(1, 1000, "lock", 990)}, 0,
			&benchPoint{"relay", 1, 1000, "lock"}},
		{"the loop is not a candidate", []benchRow{loop(100, 5000), relay(1, 100, "lease", 1000), relay(2, 100, "lease", 1020)}, 0,
			&benchPoint{"relay", 1, 100, "lease"}},
		{"the target leaves out the fastest", []benchRow{timed(1, 100, "lease", 900, 4), timed(4, 500, "lease", 2000, 30),
			timed(2, 100, "lease", 880, 8)}, 10 * time.Millisecond, &benchPoint{"relay", 1, 100, "lease"}},
		{"within 5% of the best that meets the target", []benchRow{timed(1, 100, "lease", 800, 4), timed(2, 100, "lease", 1000, 9),
			timed(4, 100, "lease", 5000, 11)}, 10 * time.Millisecond, &benchPoint{"relay", 2, 100, "lease"}},
		{"exactly at the target", []benchRow{timed(1, 100, "lease", 800, 10)}, 10 * time.Millisecond, &benchPoint{"relay", 1, 100, "lease"}},
		{"nothing meets the target", []benchRow{timed(1, 100, "lease", 800, 12), timed(2, 100, "lease", 900, 11)},
			10 * time.Millisecond, nil},
		{"a target without latencies", []benchRow{relay(1, 100, "lease", 800)}, 10 * time.Millisecond, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := recommend(tc.rows, tc.target)
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("recommend = %+v, want none", got)
			case tc.want == nil && why == "":
				t.Fatal("no recommendation and no reason")
			case tc.want == nil:
				return
			case why != "":
				t.Errorf("a recommendation and a reason for none: %q", why)
			case got == nil:
				t.Fatalf("recommend = none, want %v", *tc.want)
			case got.benchPoint != *tc.want:
				t.Fatalf("recommend = %v, want %v", got.benchPoint, *tc.want)
			case got.Reason == "" || strings.Count(got.Reason, ".") > 1 && !strings.HasSuffix(got.Reason, "."):
				t.Errorf("reason %q", got.Reason)
			}
		})
	}
}

// TestBenchEmbedded runs a tiny sweep on the embedded default in each
// output format and decodes the JSON back.
func TestBenchEmbedded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	grid := []string{"bench", "-messages", "200", "-workers", "1,2", "-batch", "50,100", "-rate", "200", "-duration", "300ms",
		"-path-messages", "100", "-count", "2"}

	code, out, errOut := cli(ctx, append(grid, "-json")...)
	if code != exitOK {
		t.Fatalf("bench -json: exit %d: %s", code, errOut)
	}
	// Not a terminal: one plain line per step, a drain and a latency run
	// per point and repetition.
	if n, paths := strings.Count(errOut, "msgs/s  cpu"), strings.Count(errOut, " path, "); n != 16 || paths != 8 {
		t.Errorf("%d drain and path lines, %d of paths; want 8 drains (4 points × 2) and 8 path runs (2 paths × 2 × 2):\n%s", n, paths, errOut)
	}
	if n := strings.Count(errOut, "→ handled p99"); n != 8 || !strings.Contains(errOut, "bench: 16/16") {
		t.Errorf("%d latency lines, want 8, and the 16th step:\n%s", n, errOut)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if len(r.Rows) != 4 || r.Recommendation == nil || r.Machine.Cores <= 0 || r.Machine.GoVersion == "" || r.Messages != 200 ||
		r.Rate != 200 || r.LatencySeconds != 0.3 {
		t.Fatalf("report %+v", r)
	}
	if len(r.Paths) != 2 || r.Paths[0].Path != "write" || r.Paths[1].Path != "consume" {
		t.Fatalf("paths %+v", r.Paths)
	}
	for _, p := range r.Paths {
		if len(p.Library) != 2 || len(p.Baseline) != 2 || p.Ratio <= 0 || p.CPURatio <= 0 || p.LibMin > p.LibMsgsPerSec ||
			p.Messages != 100 || p.Library[0].Impl != "library" || p.Baseline[0].Impl != "baseline" {
			t.Errorf("path %+v", p)
		}
	}
	var seen []int // the first runs' order: the warm-up aside, repetitions rotate
	for _, row := range r.Rows {
		if len(row.Runs) != 2 || row.MsgsPerSec <= 0 || row.MinMsgsPerSec > row.MsgsPerSec || row.MaxMsgsPerSec < row.MsgsPerSec ||
			row.RelayUS <= 0 || row.Claims != claimLease || row.Runs[0].Workers != row.Workers || row.Allocs <= 0 {
			t.Errorf("row %+v", row)
		}
		if len(row.Latency) != 2 || row.Ack == nil || row.Handled == nil || row.Handled.Count < 40 ||
			row.Handled.P99 < row.Handled.P50 || row.MinHandledP99 > row.Handled.P99 || row.MaxHandledP99 < row.Handled.P99 {
			t.Errorf("row %v latency: %d runs, ack %+v, handled %+v [%v–%v]", row.benchPoint, len(row.Latency), row.Ack, row.Handled,
				row.MinHandledP99, row.MaxHandledP99)
		}
		seen = append(seen, row.Workers*1000+row.Batch)
	}
	if !slices.Equal(seen, []int{1050, 1100, 2050, 2100}) {
		t.Errorf("rows %v", seen)
	}
	var again bytes.Buffer
	enc := json.NewEncoder(&again)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&r); err != nil || again.String() != out {
		t.Errorf("JSON round trip differs (%v):\n%s\nwant\n%s", err, again.String(), out)
	}

	code, out, errOut = cli(ctx, append(grid[:len(grid)-2], "-count", "1", "-csv")...)
	if code != exitOK {
		t.Fatalf("bench -csv: exit %d: %s", code, errOut)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 5 || recs[0][0] != "impl" || strings.Count(out, ",true\n") != 1 {
		t.Errorf("csv (%v):\n%s", err, out)
	}

	if i := slices.Index(recs[0], "handled_p99_ms"); i < 0 || len(recs) < 2 || recs[1][i] == "" {
		t.Errorf("csv has no commit → handled p99:\n%s", out)
	}

	code, out, errOut = cli(ctx, append(grid[:len(grid)-2], "-count", "1", "-p99", "1h", "-codec", "msgpack", "-consumers", "2")...)
	if code != exitOK {
		t.Fatalf("bench: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"cores", "go1.", "SQLite", "in-process", "msgs/s", "handled p50", "allocs/msg",
		"recommended: workers", "because ", "p99 meets 1h0m0s", "paths: 100 messages", "consume", "msgpack, 2 consumers"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// The in-memory store: drains and latency runs, no path runs.
	code, out, errOut = cli(ctx, "bench", "-memory", "-messages", "300", "-workers", "1", "-batch", "50", "-rate", "200",
		"-duration", "300ms", "-count", "1", "-json")
	var mem benchReport
	if code != exitOK || json.Unmarshal([]byte(out), &mem) != nil {
		t.Fatalf("bench -memory: exit %d: %s", code, errOut)
	}
	if !strings.Contains(mem.Store, "memstore") || len(mem.Rows) != 1 || mem.Rows[0].MsgsPerSec <= 0 || mem.Rows[0].Handled == nil ||
		len(mem.Paths) != 0 {
		t.Errorf("bench -memory: %+v", mem)
	}

	// No latency of an end-to-end path through SQLite is within a
	// microsecond: no recommendation, and the reason says so.
	code, out, errOut = cli(ctx, "bench", "-messages", "200", "-workers", "1", "-batch", "50", "-rate", "200",
		"-duration", "300ms", "-path-messages", "0", "-count", "1", "-p99", "1us")
	if code != exitOK {
		t.Fatalf("bench -p99 1us: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "no recommendation: no configuration met -p99 1µs") || strings.Contains(out, "recommended:") {
		t.Errorf("bench -p99 1us:\n%s", out)
	}
}

func TestBenchOnPostgresAndNATS(t *testing.T) {
	pg := testenv.URL(t, testenv.Postgres)
	nats := testenv.URL(t, testenv.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, out, errOut := cli(ctx, "bench", "-postgres", pg, "-nats", nats, "-messages", "300", "-workers", "1",
		"-batch", "100", "-count", "1", "-json")
	if code != exitOK {
		t.Fatalf("bench: exit %d: %s", code, errOut)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	var impls []string
	for _, row := range r.Rows {
		impls = append(impls, row.Impl+"/"+row.Claims)
		if row.VsLoop <= 0 {
			t.Errorf("row %+v has no ratio to the loop", row)
		}
	}
	if !slices.Equal(impls, []string{"loop/", "relay/lease", "relay/lock"}) || r.Recommendation == nil ||
		r.Recommendation.Impl != "relay" || r.Machine.Postgres == "" || r.Machine.NATS == "" {
		t.Errorf("report %+v (rows %v)", r, impls)
	}
}

func TestBenchOnMySQLAndNATS(t *testing.T) {
	dsn := testenv.URL(t, testenv.MySQL)
	nats := testenv.URL(t, testenv.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, out, errOut := cli(ctx, "bench", "-mysql", dsn, "-nats", nats, "-messages", "2000", "-workers", "1",
		"-batch", "100", "-claims", "lease,lock", "-count", "1", "-path-messages", "100", "-json")
	if code != exitOK {
		t.Fatalf("bench: exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "mysqld ") || strings.Contains(errOut, "→ handled p99") {
		t.Errorf("progress without the database's CPU, or with latency runs:\n%s", errOut)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	// The CPU figures come in clock ticks (10 ms on Linux): a short drain
	// may see none of mysqld's, so the test wants some over all the runs.
	var impls []string
	var dbCPU float64
	for _, row := range r.Rows {
		impls = append(impls, row.Impl+"/"+row.Claims)
		dbCPU += row.databaseUS()
		if row.VsLoop <= 0 || row.MsgsPerSec <= 0 || row.MySQLUS < 0 || row.PostgresUS != 0 || row.Latency != nil || row.Handled != nil {
			t.Errorf("row %+v: want a ratio to the loop, no postgres CPU and no latency runs", row)
		}
	}
	for _, p := range r.Paths {
		for _, run := range append(p.Library, p.Baseline...) {
			dbCPU += run.MySQLUS
		}
	}
	if dbCPU <= 0 {
		t.Errorf("no CPU of mysqld/mariadbd in any run: %+v", r)
	}
	if !slices.Equal(impls, []string{"loop/", "relay/lease", "relay/lock"}) || r.Recommendation == nil ||
		r.Recommendation.Impl != "relay" || r.Rate != 0 || r.Database != "mysql" || r.Machine.MySQL == "" ||
		r.Machine.NATS == "" || r.Machine.Postgres != "" || len(r.Paths) != 2 {
		t.Errorf("report %+v (rows %v)", r, impls)
	}
	if r.Store != "MySQL "+redactDSN(dsn) || !strings.HasPrefix(r.Broker, "NATS JetStream ") {
		t.Errorf("store %q, broker %q", r.Store, r.Broker)
	}
	if cfg, err := mysql.ParseDSN(dsn); err != nil || cfg.Passwd != "" && strings.Contains(r.Store, cfg.Passwd) {
		t.Errorf("store %q shows the password (%v)", r.Store, err)
	}

	var table bytes.Buffer
	if err := writeBenchTable(&table, &r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{", MySQL " + r.Machine.MySQL, "store: MySQL ", "vs loop", "mysqld", "of mysqld/mariadbd",
		"INSERT IGNORE", "recommended: workers 1, batch 100", "because "} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if strings.Contains(table.String(), "handled p50") || strings.Contains(table.String(), "postgres") {
		t.Errorf("table with latency or postgres columns:\n%s", table.String())
	}
	t.Logf("bench -mysql:\n%s", table.String())

	var csvOut bytes.Buffer
	if err := writeBenchCSV(&csvOut, &r); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&csvOut).ReadAll()
	if err != nil || len(recs) != 4 {
		t.Fatalf("csv (%v): %v", err, recs)
	}
	i := slices.Index(recs[0], "mysql_cpu_us")
	if i < 0 || slices.Contains(recs[0], "postgres_cpu_us") {
		t.Fatalf("csv header %v", recs[0])
	}
	for k, row := range r.Rows {
		if want := strconv.FormatFloat(row.databaseUS(), 'f', 2, 64); recs[k+1][i] != want {
			t.Errorf("csv %v: mysql_cpu_us %s, want %s", recs[k+1], recs[k+1][i], want)
		}
	}
}
