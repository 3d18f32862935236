package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// envMap is a getenv over a map.
func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestRelayFlags checks how txm relay reads its settings: the defaults,
// every ProcessorConfig setting from its variable, a flag over its
// variable, and the usage errors, which name the flag or the variable.
func TestRelayFlags(t *testing.T) {
	t.Parallel()
	parse := func(env map[string]string, args ...string) (relayConfig, error, string) {
		var errOut bytes.Buffer
		c, err := parseRelayFlags(args, envMap(env), io.Discard, &errOut)
		return c, err, errOut.String()
	}
	base := map[string]string{"TXM_RELAY_POSTGRES": "postgres://db/x", "TXM_RELAY_NATS": "nats://n:4222"}

	t.Run("defaults", func(t *testing.T) {
		c, err, _ := parse(base)
		if err != nil {
			t.Fatal(err)
		}
		p := c.processor
		if p.Workers != 4 || p.BatchSize != 100 || p.BatchesInFlight != 2 || p.LockClaims || p.PollInterval != time.Second ||
			p.Lease != 30*time.Second || p.PublishTimeout != 30*time.Second || p.Retry.InitialInterval != 100*time.Millisecond ||
			p.Retry.MaxInterval != 30*time.Second || p.Retry.MaxAttempts != 10 || p.BreakerThreshold != 10 ||
			p.DrainTimeout != 10*time.Second || p.Retention.Published != 0 || p.Retention.Interval != time.Minute || p.Retention.BatchSize != 1000 {
			t.Errorf("defaults: %+v", p)
		}
		if c.postgres != "postgres://db/x" || c.nats != "nats://n:4222" || c.logLevel.String() != "INFO" || c.httpAddr != "" {
			t.Errorf("store, broker, log level, http from the environment: %+v", c)
		}
	})

	t.Run("every setting from the environment", func(t *testing.T) {
		env := map[string]string{
			"TXM_RELAY_POSTGRES": "postgres://db/x", "TXM_RELAY_SCHEMA": "app", "TXM_RELAY_NATS": "nats://n:4222",
			"TXM_RELAY_STREAM": "ORDERS", "TXM_RELAY_SUBJECTS": "orders.>, payments.>", "TXM_RELAY_HTTP": "127.0.0.1:0",
			"TXM_RELAY_LOG_LEVEL": "debug", "TXM_RELAY_POLL_ONLY": "true", "TXM_RELAY_KEEP_PUBLISHED": "1",
			"TXM_RELAY_WORKERS": "7", "TXM_RELAY_BATCH": "250", "TXM_RELAY_BATCHES_IN_FLIGHT": "3", "TXM_RELAY_LOCK_CLAIMS": "true",
			"TXM_RELAY_POLL_INTERVAL": "250ms", "TXM_RELAY_LEASE": "45s", "TXM_RELAY_PUBLISH_TIMEOUT": "5s",
			"TXM_RELAY_RETRY_INITIAL": "1s", "TXM_RELAY_RETRY_MAX": "1m", "TXM_RELAY_RETRY_MAX_ATTEMPTS": "-1",
			"TXM_RELAY_BREAKER_THRESHOLD": "-1", "TXM_RELAY_DROP_EXPIRED": "true", "TXM_RELAY_DRAIN_TIMEOUT": "3s", "TXM_RELAY_RETENTION_PUBLISHED": "168h",
			"TXM_RELAY_RETENTION_INTERVAL": "5m", "TXM_RELAY_RETENTION_BATCH": "200",
			"TXM_RELAY_STORE_RETRY_INITIAL": "2s", "TXM_RELAY_STORE_RETRY_MAX": "20s",
		}
		c, err, _ := parse(env)
		if err != nil {
			t.Fatal(err)
		}
		p := c.processor
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"workers", p.Workers, 7}, {"batch", p.BatchSize, 250}, {"batches-in-flight", p.BatchesInFlight, 3},
			{"lock-claims", p.LockClaims, true}, {"poll-interval", p.PollInterval, 250 * time.Millisecond},
			{"lease", p.Lease, 45 * time.Second}, {"publish-timeout", p.PublishTimeout, 5 * time.Second},
			{"retry-initial", p.Retry.InitialInterval, time.Second}, {"retry-max", p.Retry.MaxInterval, time.Minute},
			{"retry-max-attempts", p.Retry.MaxAttempts, -1}, {"breaker-threshold", p.BreakerThreshold, -1},
			{"drop-expired", p.DropExpired, true},
			{"drain-timeout", p.DrainTimeout, 3 * time.Second}, {"retention-published", p.Retention.Published, 168 * time.Hour},
			{"retention-interval", p.Retention.Interval, 5 * time.Minute}, {"retention-batch", p.Retention.BatchSize, 200},
			{"store-retry-initial", p.StoreRetry.InitialInterval, 2 * time.Second}, {"store-retry-max", p.StoreRetry.MaxInterval, 20 * time.Second},
			{"schema", c.schema, "app"}, {"stream", c.stream, "ORDERS"}, {"subjects", strings.Join(c.subjects, " "), "orders.> payments.>"},
			{"http", c.httpAddr, "127.0.0.1:0"}, {"log-level", c.logLevel.String(), "DEBUG"},
			{"poll-only", c.pollOnly, true}, {"keep-published", c.keepPublished, true},
		} {
			if f.got != f.want {
				t.Errorf("%s from %s: got %v, want %v", f.name, relayEnv(f.name), f.got, f.want)
			}
		}
	})

	t.Run("a flag wins over its variable", func(t *testing.T) {
		env := map[string]string{"TXM_RELAY_POSTGRES": "postgres://db/x", "TXM_RELAY_NATS": "nats://env:4222",
			"TXM_RELAY_WORKERS": "7", "TXM_RELAY_LOCK_CLAIMS": "true", "TXM_RELAY_LEASE": "45s"}
		c, err, _ := parse(env, "-workers", "2", "-lock-claims=false", "-nats", "nats://flag:4222")
		if err != nil {
			t.Fatal(err)
		}
		if c.processor.Workers != 2 || c.processor.LockClaims || c.nats != "nats://flag:4222" {
			t.Errorf("the flags did not win: workers %d, lock-claims %v, nats %s", c.processor.Workers, c.processor.LockClaims, c.nats)
		}
		if c.processor.Lease != 45*time.Second {
			t.Errorf("lease %v: the variable of a flag not given was not applied", c.processor.Lease)
		}
	})

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error
	}{
		{"missing store", map[string]string{"TXM_RELAY_NATS": "nats://n"}, nil, "-postgres URL, -sqlite PATH or -mysql DSN"},
		{"missing broker", map[string]string{"TXM_RELAY_SQLITE": "x.db"}, nil, "-nats URL (or TXM_RELAY_NATS)"},
		{"two stores", base, []string{"-sqlite", "x.db"}, "give one store, not TXM_RELAY_POSTGRES and -sqlite"},
		{"three stores", base, []string{"-sqlite", "x.db", "-mysql", "root@/db"}, "not TXM_RELAY_POSTGRES and -sqlite and -mysql"},
		{"poll-only on SQLite", map[string]string{"TXM_RELAY_NATS": "nats://n"}, []string{"-sqlite", "x.db", "-poll-only"}, "-poll-only is for PostgreSQL"},
		{"bad variable", merge(base, "TXM_RELAY_WORKERS", "many"), nil, `invalid value "many" for TXM_RELAY_WORKERS (-workers)`},
		{"bad duration variable", merge(base, "TXM_RELAY_LEASE", "30"), nil, `invalid value "30" for TXM_RELAY_LEASE (-lease)`},
		{"bad bool variable", merge(base, "TXM_RELAY_LOCK_CLAIMS", "yes please"), nil, "TXM_RELAY_LOCK_CLAIMS (-lock-claims)"},
		{"bad level variable", merge(base, "TXM_RELAY_LOG_LEVEL", "loud"), nil, `unknown level "loud"`},
		{"zero workers from the variable", merge(base, "TXM_RELAY_WORKERS", "0"), nil, "TXM_RELAY_WORKERS must be at least 1, got 0"},
		{"zero workers from the flag", merge(base, "TXM_RELAY_WORKERS", "0"), []string{"-workers", "0"}, "-workers must be at least 1, got 0"},
		{"negative lease", base, []string{"-lease", "-1s"}, "-lease must be positive"},
		{"zero max attempts", base, []string{"-retry-max-attempts", "0"}, "-1: never dead-letter"},
		{"zero breaker", merge(base, "TXM_RELAY_BREAKER_THRESHOLD", "0"), nil, "TXM_RELAY_BREAKER_THRESHOLD must not be 0"},
		{"retry max below initial", base, []string{"-retry-initial", "2s", "-retry-max", "1s"}, "-retry-max (1s) must not be shorter than -retry-initial (2s)"},
		{"stream without subjects", base, []string{"-stream", "ORDERS"}, "-stream and -subjects go together"},
		{"locked claims on SQLite", map[string]string{"TXM_RELAY_NATS": "nats://n"}, []string{"-sqlite", "x.db", "-lock-claims"}, "-lock-claims needs PostgreSQL or MySQL"},
		{"schema on SQLite", map[string]string{"TXM_RELAY_NATS": "nats://n", "TXM_RELAY_SCHEMA": "app"}, []string{"-sqlite", "x.db"}, "TXM_RELAY_SCHEMA is for PostgreSQL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err, _ := parse(tc.env, tc.args...)
			var usage *usageError
			if !errors.As(err, &usage) {
				t.Fatalf("error %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
		})
	}

	t.Run("bad flag", func(t *testing.T) {
		_, err, errOut := parse(base, "-batch", "lots")
		if !errors.Is(err, errReported) || !strings.Contains(errOut, `invalid value "lots" for flag -batch`) {
			t.Errorf("error %v, stderr %q", err, errOut)
		}
	})
}

// merge returns m with k set to v.
func merge(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for mk, mv := range m {
		if mk != k {
			out[mk] = mv
		}
	}
	return out
}

// TestRelayCommandLine checks the exit statuses of txm relay through
// runMain, with the variables in the process's environment.
func TestRelayCommandLine(t *testing.T) {
	t.Setenv("TXM_RELAY_POSTGRES", "")
	t.Setenv("TXM_RELAY_SQLITE", "")
	t.Setenv("TXM_RELAY_NATS", "")
	ctx := context.Background()
	code, out, errOut := cli(ctx, "relay", "-h")
	if code != exitOK || !strings.Contains(out, "usage: txm relay") || errOut != "" {
		t.Errorf("relay -h: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, name := range []string{"workers", "batch", "batches-in-flight", "lock-claims", "poll-interval", "lease", "publish-timeout",
		"retry-initial", "retry-max", "retry-max-attempts", "breaker-threshold", "drop-expired", "drain-timeout", "retention-published",
		"retention-interval", "retention-batch", "postgres", "schema", "sqlite", "mysql", "nats", "stream", "subjects", "http", "log-level"} {
		if !strings.Contains(out, "-"+name+" ") && !strings.Contains(out, "-"+name+"\n") {
			t.Errorf("relay -h lacks the flag -%s", name)
		}
		if !strings.Contains(out, "[$"+relayEnv(name)+"]") {
			t.Errorf("relay -h lacks the variable %s", relayEnv(name))
		}
	}
	if code, _, errOut := cli(ctx, "relay", "-postgres", "postgres://x"); code != exitUsage || !strings.Contains(errOut, "-nats URL") {
		t.Errorf("relay without -nats: exit %d: %s", code, errOut)
	}
	if code, _, errOut := cli(ctx, "relay", "-nats", "nats://x"); code != exitUsage || !strings.Contains(errOut, "-postgres URL, -sqlite PATH or -mysql DSN") {
		t.Errorf("relay without a store: exit %d: %s", code, errOut)
	}
	t.Setenv("TXM_RELAY_NATS", "nats://127.0.0.1:1")
	t.Setenv("TXM_RELAY_BATCHES_IN_FLIGHT", "two")
	if code, _, errOut := cli(ctx, "relay", "-postgres", "postgres://x"); code != exitUsage || !strings.Contains(errOut, "TXM_RELAY_BATCHES_IN_FLIGHT") {
		t.Errorf("relay with a bad variable: exit %d: %s", code, errOut)
	}
	t.Setenv("TXM_RELAY_BATCHES_IN_FLIGHT", "")
	missing := filepath.Join(t.TempDir(), "none.db")
	if code, _, errOut := cli(ctx, "relay", "-sqlite", missing); code != exitFailure || !strings.Contains(errOut, "no SQLite database at "+missing) {
		t.Errorf("relay on a missing SQLite file: exit %d: %s", code, errOut)
	}
}

// logRecords collects the JSON records a relay writes, for a test to wait
// on. It is safe for concurrent use.
type logRecords struct {
	mu      sync.Mutex
	partial []byte
	recs    []map[string]any
	raw     bytes.Buffer
	changed chan struct{} // closed and replaced at each new record
}

func newLogRecords() *logRecords { return &logRecords{changed: make(chan struct{})} }

func (l *logRecords) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		var rec map[string]any
		if json.Unmarshal(l.partial[:i], &rec) == nil {
			l.recs = append(l.recs, rec)
		} else {
			l.recs = append(l.recs, map[string]any{"msg": "(not JSON) " + string(l.partial[:i])})
		}
		l.partial = l.partial[i+1:]
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// String is everything written.
func (l *logRecords) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// find returns the first record whose msg is msg.
func (l *logRecords) find(msg string) (map[string]any, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r["msg"] == msg {
			return r, nil
		}
	}
	return nil, l.changed
}

// wait waits for a record whose msg is msg.
func (l *logRecords) wait(t *testing.T, msg string, d time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(d)
	for {
		rec, changed := l.find(msg)
		if rec != nil {
			return rec
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log record %q within %v; the relay logged:\n%s", msg, d, l.String())
		}
	}
}

// relayFixture is a PostgreSQL schema of a test's own with the tables, a
// store on it to save messages, and a stream name and subject prefix of its
// own.
type relayFixture struct {
	pgURL, schema    string
	db               *sql.DB
	store            *sqlstore.LockingStore
	stream, subjects string
	prefix           string
}

func newRelayFixture(t *testing.T) *relayFixture {
	t.Helper()
	f := newUnmigratedFixture(t)
	if err := f.store.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

// newUnmigratedFixture is newRelayFixture without the tables.
func newUnmigratedFixture(t *testing.T) *relayFixture {
	t.Helper()
	pg := testenv.URL(t, testenv.Postgres)
	db, err := sql.Open("pgx", pg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	n := time.Now().UnixNano()
	f := &relayFixture{pgURL: pg, schema: fmt.Sprintf("txm_relay_test_%d", n), db: db,
		stream: fmt.Sprintf("TXM_RELAY_TEST_%d", n), prefix: fmt.Sprintf("relaytest%d", n)}
	f.subjects = f.prefix + ".>"
	if f.store, err = postgres.NewDB(db, sqlstore.Config{Schema: f.schema, PollOnly: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.store.Close() })
	t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+f.schema+" CASCADE") })
	return f
}

// save saves n messages per topic (the suffix of the fixture's prefix), in
// transactions of up to 500, keyed by i%10, and returns their IDs.
func (f *relayFixture) save(t *testing.T, topic string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for start := 0; start < n; start += 500 {
		if err := f.store.InTx(ctx, func(ctx context.Context) error {
			for i := start; i < min(n, start+500); i++ {
				m := async.NewMessage(f.prefix+"."+topic, "Test", []byte(fmt.Sprintf(`{"i":%d}`, i)),
					async.WithMetadata(async.Metadata{async.MetaPartitionKey: fmt.Sprintf("k%d", i%10)}))
				if err := f.store.Outbox().Save(ctx, m); err != nil {
					return err
				}
				ids = append(ids, m.ID())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// args are the relay's store and stream flags for the fixture.
func (f *relayFixture) args(natsURL string) []string {
	return []string{"relay", "-postgres", f.pgURL, "-schema", f.schema, "-nats", natsURL, "-stream", f.stream, "-subjects", f.subjects}
}

// outboxCounts returns the fixture's outbox rows still pending, those with a
// lease held and those with attempts counted.
func (f *relayFixture) outboxCounts(t *testing.T) (pending, leased, attempted int) {
	t.Helper()
	err := f.db.QueryRowContext(context.Background(), `SELECT
		count(*) FILTER (WHERE state = 'pending'),
		count(*) FILTER (WHERE claimed_until IS NOT NULL),
		count(*) FILTER (WHERE attempts > 0)
		FROM `+f.schema+`.txm_outbox`).Scan(&pending, &leased, &attempted)
	if err != nil {
		t.Fatal(err)
	}
	return pending, leased, attempted
}

// streamIDs connects to natsURL and returns how many times each message ID
// is in the fixture's stream; cleanup deletes the stream.
func streamIDs(t *testing.T, natsURL, stream string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	if info.State.Msgs == 0 {
		return ids
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for got := uint64(0); got < info.State.Msgs; {
		batch, err := cons.Fetch(int(min(500, info.State.Msgs-got)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			ids[m.Headers().Get(jetstream.MsgIDHeader)]++
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read stream %s after %d of %d messages: %v", stream, got, info.State.Msgs, err)
		}
	}
	return ids
}

// streamMsgs returns how many messages the stream holds (0 while it does
// not exist).
func streamMsgs(ctx context.Context, js jetstream.JetStream, stream string) uint64 {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func deleteStream(t *testing.T, natsURL, stream string) {
	t.Cleanup(func() {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			return
		}
		defer nc.Close()
		if js, err := jetstream.New(nc); err == nil {
			_ = js.DeleteStream(context.Background(), stream)
		}
	})
}

// buildTxm builds the command into a temporary directory.
func buildTxm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "txm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestRelayProcessStopsOnSIGTERM runs txm relay as a process on a backlog
// in PostgreSQL, sends it SIGTERM while it drains, and checks that it exits
// with status 0 after logging its stop, holding no lease and having counted
// no attempt; every message is either in the stream or still pending, and a
// second run publishes the rest.
func TestRelayProcessStopsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	natsURL := testenv.URL(t, testenv.NATS)
	f := newRelayFixture(t)
	deleteStream(t, natsURL, f.stream)
	const total = 20000
	ids := f.save(t, "placed", total)
	bin := buildTxm(t)

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The first run: SIGTERM once a tenth of the messages are in the stream,
	// while the relay has batches claimed ahead and in flight.
	logs := newLogRecords()
	cmd := exec.CommandContext(ctx, bin, append(f.args(natsURL), "-batch", "50", "-lease", "1m")...)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "txm: relay started", time.Minute)
	for streamMsgs(ctx, js, f.stream) < total/10 {
		if ctx.Err() != nil {
			t.Fatalf("no message reached the stream; the relay logged:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the relay did not exit with status 0 on SIGTERM: %v\n%s", err, logs)
	}
	stop := logs.wait(t, "txm relay: stopped", time.Second)
	if reason, _ := stop["reason"].(string); !strings.Contains(reason, "terminated") {
		t.Errorf("the stop record's reason is %q, want the SIGTERM", reason)
	}
	logs.wait(t, "txm: relay stopped", time.Second)
	pending, leased, attempted := f.outboxCounts(t)
	if leased != 0 || attempted != 0 {
		t.Errorf("after SIGTERM: %d messages still leased and %d with attempts counted, want none", leased, attempted)
	}
	published := streamIDs(t, natsURL, f.stream)
	t.Logf("SIGTERM after %d of %d messages were published; %d pending", len(published), total, pending)
	if len(published)+pending < total {
		t.Errorf("%d messages published and %d pending: %d of %d lost", len(published), pending, total-len(published)-pending, total)
	}

	// The second run publishes the rest.
	logs = newLogRecords()
	cmd = exec.CommandContext(ctx, bin, f.args(natsURL)...)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		if p, _, _ := f.outboxCounts(t); p == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the second run did not publish the rest; it logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the second run did not exit with status 0 on SIGINT: %v\n%s", err, logs)
	}
	logs.wait(t, "txm relay: stopped", time.Second)
	published = streamIDs(t, natsURL, f.stream)
	for _, id := range ids {
		if published[id] != 1 {
			t.Fatalf("message %s is in the stream %d times, want once", id, published[id])
		}
	}
	if len(published) != total {
		t.Errorf("the stream holds %d message IDs, want %d", len(published), total)
	}
}

// runRelayInProcess runs txm relay through runMain until the returned
// stop, which cancels it and returns its exit status.
func runRelayInProcess(t *testing.T, args ...string) (logs *logRecords, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = newLogRecords()
	done := make(chan int, 1)
	go func() { done <- runMain(ctx, args, io.Discard, logs) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("the relay did not return within a minute of its cancellation:\n%s", logs)
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return logs, stop
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// waitStatus polls url until it answers with status, and returns the body.
func waitStatus(t *testing.T, url string, status int, d time.Duration, logs *logRecords) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		code, body := httpGet(t, url)
		if code == status {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q for %v, want %d; the relay logged:\n%s", url, code, body, d, status, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayHealthz starts the relay before its broker: /healthz says 503
// with the reason until the broker is up, 200 once it is and the relay
// runs, 503 again while the broker is down, 200 when it is back; the relay
// stops with status 0 and leaves no goroutine behind.
func TestRelayHealthz(t *testing.T) {
	f := newRelayFixture(t)
	broker := testenv.StartNATS(t)
	broker.Stop()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	logs, stop := runRelayInProcess(t, append(f.args(broker.URL()), "-http", "127.0.0.1:0", "-health-timeout", "500ms")...)
	addr, _ := logs.wait(t, "txm relay: serving /healthz and /metrics", 30*time.Second)["http_addr"].(string)
	if addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("the relay logged the address %q, want the bound one", addr)
	}
	health := "http://" + addr + "/healthz"
	body := waitStatus(t, health, http.StatusServiceUnavailable, 10*time.Second, logs)
	if !strings.Contains(body, "relay: starting") || !strings.Contains(body, "broker: not connected") {
		t.Errorf("/healthz before the broker is up says %q, want the relay starting and the broker not connected", body)
	}
	if strings.Contains(body, "store") {
		t.Errorf("/healthz blames the store, which answers: %q", body)
	}
	waiting := logs.wait(t, "txm relay: waiting for the store and the broker", 10*time.Second)
	if reason, _ := waiting["reason"].(string); !strings.Contains(reason, "broker") {
		t.Errorf("the wait is logged with the reason %q, want the broker", reason)
	}
	if rec, _ := logs.find("txm: relay started"); rec != nil {
		t.Fatal("the relay started before the broker answered")
	}

	broker.Start()
	logs.wait(t, "txm: relay started", 30*time.Second)
	if body := waitStatus(t, health, http.StatusOK, 30*time.Second, logs); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz says %q with 200, want ok", body)
	}

	broker.Stop()
	if body := waitStatus(t, health, http.StatusServiceUnavailable, 30*time.Second, logs); !strings.Contains(body, "broker") || strings.Contains(body, "relay:") {
		t.Errorf("/healthz with the broker down says %q, want only the broker", body)
	}
	broker.Start()
	waitStatus(t, health, http.StatusOK, 30*time.Second, logs)

	if code := stop(); code != exitOK {
		t.Errorf("exit status %d, want 0:\n%s", code, logs)
	}
	logs.wait(t, "txm relay: stopped", time.Second)
	if _, err := http.Get(health); err == nil {
		t.Error("the HTTP listener still answers after the relay stopped")
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestRelayMetrics relays messages of two topics, with leases and with
// locked claims, and reads /metrics: the published counter, parsed from the
// Prometheus text, has each topic's count.
func TestRelayMetrics(t *testing.T) {
	natsURL := testenv.URL(t, testenv.NATS)
	for _, mode := range []string{"leases", "locked"} {
		t.Run(mode, func(t *testing.T) { testRelayMetrics(t, natsURL, mode == "locked") })
	}
}

func testRelayMetrics(t *testing.T, natsURL string, locked bool) {
	f := newRelayFixture(t)
	deleteStream(t, natsURL, f.stream)
	want := map[string]float64{f.prefix + ".placed": 25, f.prefix + ".paid": 15}
	f.save(t, "placed", 25)
	f.save(t, "paid", 15)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	logs, stop := runRelayInProcess(t, append(f.args(natsURL), "-http", "127.0.0.1:0", fmt.Sprintf("-lock-claims=%v", locked))...)
	addr, _ := logs.wait(t, "txm relay: serving /healthz and /metrics", 30*time.Second)["http_addr"].(string)
	wantMode := map[bool]string{false: "leases", true: "locked"}[locked]
	if mode, _ := logs.wait(t, "txm: relay started", 30*time.Second)["claim_mode"].(string); mode != wantMode {
		t.Errorf("the relay claims in mode %q, want %q", mode, wantMode)
	}
	metrics := "http://" + addr + "/metrics"
	deadline := time.Now().Add(30 * time.Second)
	var got map[string]float64
	var text string
	for {
		var code int
		code, text = httpGet(t, metrics)
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d %s", code, text)
		}
		got = publishedByTopic(t, text)
		if got[f.prefix+".placed"]+got[f.prefix+".paid"] >= 40 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for topic, n := range want {
		if got[topic] != n {
			t.Errorf("txm_relay_published_total{topic=%q} = %v, want %v", topic, got[topic], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("published counter topics %v, want %v", got, want)
	}
	for _, name := range []string{"go_goroutines", "txm_relay_batch_size", "txm_relay_publish_duration_seconds"} {
		if !strings.Contains(text, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code := stop(); code != exitOK {
		t.Errorf("exit status %d, want 0:\n%s", code, logs)
	}
	http.DefaultClient.CloseIdleConnections()
}

// publishedByTopic parses Prometheus text and returns the published
// counter's value per topic.
func publishedByTopic(t *testing.T, text string) map[string]float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text)
	}
	fam, ok := families["txm_relay_published_total"]
	if !ok {
		return map[string]float64{}
	}
	if fam.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("txm_relay_published_total is a %v, want a counter", fam.GetType())
	}
	out := map[string]float64{}
	for _, m := range fam.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "topic" {
				out[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestRelayOnSQLite relays a SQLite file's outbox to JetStream with
// -log-level warn: every message arrives once, and no record below WARN is
// logged.
func TestRelayOnSQLite(t *testing.T) {
	natsURL := testenv.URL(t, testenv.NATS)
	path := filepath.Join(t.TempDir(), "relay.db")
	store, err := sqlite.Open(context.Background(), path, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	testRelayOnStore(t, natsURL, store, "-sqlite", path)
}

// TestRelayOnMySQL relays a MySQL outbox, in a database of the test's own,
// as TestRelayOnSQLite does.
func TestRelayOnMySQL(t *testing.T) {
	natsURL := testenv.URL(t, testenv.NATS)
	dsn := testenv.URL(t, testenv.MySQL)
	ctx := context.Background()
	dc, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := mysql.Open(ctx, dsn, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	dc.DBName = fmt.Sprintf("txm_relay_test_%d", time.Now().UnixNano())
	if _, err := admin.DB().ExecContext(ctx, "CREATE DATABASE "+dc.DBName); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = admin.DB().ExecContext(context.Background(), "DROP DATABASE "+dc.DBName) }()
	own := dc.FormatDSN()
	store, err := mysql.Open(ctx, own, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	testRelayOnStore(t, natsURL, store.Store, "-mysql", own)
	testRelayOnStore(t, natsURL, store.Store, "-mysql", own, "-lock-claims") // MySQL claims by locks too
}

// testRelayOnStore migrates store, saves messages in it and runs txm relay
// with storeArgs, which select the same store, until they are published.
func testRelayOnStore(t *testing.T, natsURL string, store *sqlstore.Store, storeArgs ...string) {
	ctx := context.Background()
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	n := time.Now().UnixNano()
	stream, prefix := fmt.Sprintf("TXM_RELAY_STORE_%d", n), fmt.Sprintf("relaystore%d", n)
	deleteStream(t, natsURL, stream)
	var ids []string
	if err := store.InTx(ctx, func(ctx context.Context) error {
		for i := range 30 {
			m := async.NewMessage(prefix+".placed", "Test", []byte(fmt.Sprint(i)),
				async.WithMetadata(async.Metadata{async.MetaPartitionKey: fmt.Sprintf("k%d", i%3)}))
			ids = append(ids, m.ID())
			if err := store.Outbox().Save(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	args := append(append([]string{"relay"}, storeArgs...), "-nats", natsURL, "-stream", stream, "-subjects", prefix+".>",
		"-log-level", "warn", "-poll-interval", "50ms")
	logs, stop := runRelayInProcess(t, args...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := store.Outbox().Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still pending after 30s; the relay logged:\n%s", st.Pending, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("exit status %d, want 0:\n%s", code, logs)
	}
	got := streamIDs(t, natsURL, stream)
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("message %s is in the stream %d times, want once", id, got[id])
		}
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, r := range logs.recs {
		if lvl, _ := r["level"].(string); lvl != "WARN" && lvl != "ERROR" {
			t.Errorf("-log-level warn logged a %s record: %v", lvl, r)
		}
	}
}

// TestRelayWaitsForTheTables starts the relay on a schema without the
// tables: it waits, saying to run txm migrate, and starts once they exist.
func TestRelayWaitsForTheTables(t *testing.T) {
	natsURL := testenv.URL(t, testenv.NATS)
	f := newUnmigratedFixture(t)
	deleteStream(t, natsURL, f.stream)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	logs, stop := runRelayInProcess(t, f.args(natsURL)...)
	waiting := logs.wait(t, "txm relay: waiting for the store and the broker", 30*time.Second)
	if reason, _ := waiting["reason"].(string); !strings.Contains(reason, "the tables do not exist: run txm migrate") || strings.Contains(reason, "broker") {
		t.Errorf("the wait is logged with the reason %q, want the missing tables only", reason)
	}
	if err := f.store.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "txm: relay started", 30*time.Second)
	if code := stop(); code != exitOK {
		t.Errorf("exit status %d, want 0:\n%s", code, logs)
	}
}

// TestRelayStopsWhileWaiting stops a relay whose broker never answered:
// exit status 0, and the stop says so.
func TestRelayStopsWhileWaiting(t *testing.T) {
	f := newRelayFixture(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nowhere := fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))
	logs, stop := runRelayInProcess(t, f.args(nowhere)...)
	logs.wait(t, "txm relay: waiting for the store and the broker", 30*time.Second)
	if code := stop(); code != exitOK {
		t.Errorf("exit status %d, want 0:\n%s", code, logs)
	}
	logs.wait(t, "txm relay: stopped before the store and the broker answered", time.Second)
}
