package chaostest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/chaostest/internal/tcpproxy"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/internal/testenv/natsembed"
	"github.com/transmanager/transmanager/txm"
)

// claimModes runs a fault test with leases and with locked claims.
var claimModes = []struct {
	name string
	lock bool
}{{"leases", false}, {"locked", true}}

// TestFaultPostgresTerminated ends the relay's PostgreSQL backends with
// pg_terminate_backend, again and again, while producers write: the relay
// logs the failures, goes on, and publishes every committed message once
// per key order.
func TestFaultPostgresTerminated(t *testing.T) {
	for _, mode := range claimModes {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, "private")
			app := "chaos-relay-" + e.schema
			store := e.relayStore(t, app, "")
			relay := startRelay(t, "relay", natsjs.NewPublisher(jetStream(t, e.natsURL), natsjs.PublisherConfig{}), store,
				txm.ProcessorConfig{LockClaims: mode.lock, BatchSize: 50, Lease: 2 * time.Second, PublishTimeout: 5 * time.Second})
			l := newLedger()
			stop := e.producing(l, 300)
			ctx := context.Background()
			terminated := 0
			for range 15 {
				time.Sleep(300 * time.Millisecond)
				var n int
				if err := e.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
					t.Fatal(err)
				}
				terminated += n
			}
			stop()
			r := e.waitPublished(t, l, time.Minute)
			relay.stop(t)
			if terminated == 0 {
				t.Fatal("no backend of the relay was terminated")
			}
			if relay.logs.count() == 0 {
				t.Error("the relay logged no warning or error while its connections were terminated")
			}
			t.Logf("%d backends terminated; relay logged %d warnings, e.g. %s; %s",
				terminated, relay.logs.count(), first(relay.logs.matching("terminat", "connection", "closed", "EOF")), summary(l, r))
		})
	}
}

// TestFaultPostgresProxyCut puts a TCP proxy between the relay and
// PostgreSQL and cuts every connection through it, mid-transaction, again
// and again, with a stretch where PostgreSQL cannot be reached at all.
func TestFaultPostgresProxyCut(t *testing.T) {
	for _, mode := range claimModes {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, "private")
			cfg, err := pgx.ParseConfig(e.pgURL)
			if err != nil {
				t.Fatal(err)
			}
			proxy, err := tcpproxy.New(fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = proxy.Close() })
			store := e.relayStore(t, "chaos-proxied", proxy.Addr())
			relay := startRelay(t, "relay", natsjs.NewPublisher(jetStream(t, e.natsURL), natsjs.PublisherConfig{}), store,
				txm.ProcessorConfig{LockClaims: mode.lock, BatchSize: 50, Lease: 2 * time.Second, PublishTimeout: 5 * time.Second})
			l := newLedger()
			stop := e.producing(l, 300)
			cut := 0
			for i := range 12 {
				time.Sleep(time.Duration(200+rand.IntN(300)) * time.Millisecond)
				cut += proxy.Cut()
				if i == 6 { // PostgreSQL unreachable for two seconds
					proxy.Refuse(true)
					time.Sleep(2 * time.Second)
					proxy.Refuse(false)
				}
			}
			stop()
			r := e.waitPublished(t, l, time.Minute)
			relay.stop(t)
			if cut == 0 {
				t.Fatal("no connection went through the proxy")
			}
			if relay.logs.count() == 0 {
				t.Error("the relay logged no warning or error while its connections were cut")
			}
			t.Logf("%d connections cut; relay logged %d warnings, e.g. %s; %s", cut, relay.logs.count(), first(relay.logs.matching("")), summary(l, r))
		})
	}
}

// TestFaultBrokerRestart stops the broker and starts it again with its
// store while the relay publishes: an embedded current server shut down
// and restarted, and a server process killed (SIGKILL) and restarted. With
// sync_interval: always nothing acknowledged is lost.
func TestFaultBrokerRestart(t *testing.T) {
	testenv.URL(t, testenv.NATS) // runs with the other service tests
	for _, how := range []string{"embedded stop", "process kill"} {
		t.Run(strings.ReplaceAll(how, " ", "_"), func(t *testing.T) {
			var (
				url     string
				restart func()
			)
			if how == "embedded stop" {
				s := natsembed.Start(t)
				url, restart = s.URL(), func() { s.Stop(); time.Sleep(time.Second); s.Start() }
			} else {
				s := testenv.StartNATS(t)
				url, restart = s.URL(), func() { s.Stop(); time.Sleep(time.Second); s.Start() }
			}
			e := newEnvAt(t, testenv.URL(t, testenv.Postgres), url)
			e.broker = how
			relay := startRelay(t, "relay", natsjs.NewPublisher(jetStream(t, url), natsjs.PublisherConfig{AckTimeout: time.Second}), e.store,
				txm.ProcessorConfig{BatchSize: 50, Lease: 2 * time.Second, PublishTimeout: 2 * time.Second})
			l := newLedger()
			stop := e.producing(l, 300)
			for range 2 {
				time.Sleep(2 * time.Second)
				restart()
			}
			time.Sleep(time.Second)
			stop()
			r := e.waitPublished(t, l, time.Minute)
			relay.stop(t)
			if relay.logs.count() == 0 {
				t.Error("the relay logged no warning or error while the broker was down")
			}
			t.Logf("broker restarted twice; relay logged %d warnings, e.g. %s; %s", relay.logs.count(), first(relay.logs.matching("")), summary(l, r))
		})
	}
}

// TestFaultPublishHangsPastLease stalls the traffic between one relay and
// NATS for longer than its lease while a second relay publishes directly:
// the second takes the expired claims over, the first's late publishes are
// absorbed by the stream's duplicate window, and every key stays in order.
func TestFaultPublishHangsPastLease(t *testing.T) {
	e := newEnv(t, "private")
	proxy, err := tcpproxy.New(strings.TrimPrefix(e.natsURL, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	const lease = time.Second
	cfg := txm.ProcessorConfig{BatchSize: 20, Lease: lease, PublishTimeout: 2 * lease}
	stalled := startRelay(t, "stalled", natsjs.NewPublisher(jetStream(t, "nats://"+proxy.Addr()), natsjs.PublisherConfig{}),
		e.relayStore(t, "chaos-stalled", ""), cfg)
	direct := startRelay(t, "direct", natsjs.NewPublisher(jetStream(t, e.natsURL), natsjs.PublisherConfig{}),
		e.relayStore(t, "chaos-direct", ""), cfg)
	l := newLedger()
	stop := e.producing(l, 300)
	for range 2 {
		time.Sleep(time.Second)
		proxy.Stall()
		time.Sleep(3 * lease)
		proxy.Resume()
	}
	time.Sleep(time.Second)
	stop()
	r := e.waitPublished(t, l, time.Minute)
	stalled.stop(t)
	direct.stop(t)
	timeouts := stalled.logs.matching("deadline", "timeout", "timed out")
	if len(timeouts) == 0 {
		t.Errorf("the stalled relay logged no publish timeout; its warnings: %v", first(stalled.logs.matching("")))
	}
	t.Logf("NATS traffic of one relay stalled twice for %v (lease %v, publish timeout %v); it logged %d timeouts, e.g. %s; %s",
		3*lease, lease, cfg.PublishTimeout, len(timeouts), first(timeouts), summary(l, r))
}

// skewedClock is the system clock moved by an offset.
type skewedClock struct{ offset time.Duration }

func (c skewedClock) Now() time.Time                         { return time.Now().Add(c.offset) }
func (c skewedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// flaky fails about one publish in five, so retries are scheduled.
type flaky struct {
	next   async.MessagePublisher
	failed atomic.Int64
}

func (f *flaky) Publish(ctx context.Context, topic string, msg async.Message) error {
	if rand.IntN(5) == 0 {
		f.failed.Add(1)
		return errors.New("flaky publish")
	}
	return f.next.Publish(ctx, topic, msg)
}

// TestFaultClockSkew runs two relays whose clocks are minutes ahead of and
// behind the database's, with publishes that fail now and then: leases and
// retry times follow the database's clock, so no claim lasts longer than
// its lease by the database's time, retries come on time, and everything
// is published in order.
func TestFaultClockSkew(t *testing.T) {
	e := newEnv(t, "private")
	const lease = 2 * time.Second
	var relays []*inproc
	var pubs []*flaky
	for i, offset := range []time.Duration{7 * time.Minute, -7 * time.Minute} {
		f := &flaky{next: natsjs.NewPublisher(jetStream(t, e.natsURL), natsjs.PublisherConfig{})}
		pubs = append(pubs, f)
		relays = append(relays, startRelay(t, fmt.Sprintf("relay %+v", offset), f, e.relayStore(t, fmt.Sprintf("chaos-skew-%d", i), ""),
			txm.ProcessorConfig{BatchSize: 20, Lease: lease, Clock: skewedClock{offset}, LockClaims: i == 1}))
	}
	l := newLedger()
	stop := e.producing(l, 200)
	ctx := context.Background()
	var longest time.Duration
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		var ahead *time.Duration
		if err := e.pool.QueryRow(ctx, `SELECT max(claimed_until - now()) FROM `+e.table("txm_outbox")).Scan(&ahead); err != nil {
			t.Fatal(err)
		}
		if ahead != nil && *ahead > longest {
			longest = *ahead
		}
	}
	stop()
	r := e.waitPublished(t, l, 30*time.Second)
	for _, relay := range relays {
		relay.stop(t)
	}
	if longest > lease+time.Second {
		t.Errorf("a claim lasted until %v after the database's now(), more than the lease %v: leases follow the relay's clock", longest, lease)
	}
	if pubs[0].failed.Load() == 0 || pubs[1].failed.Load() == 0 {
		t.Errorf("publishes failed %d and %d times; want retries on both relays", pubs[0].failed.Load(), pubs[1].failed.Load())
	}
	t.Logf("relays at +7m and -7m, %d and %d failed publishes retried; longest claim ahead of the database's clock %v (lease %v); %s",
		pubs[0].failed.Load(), pubs[1].failed.Load(), longest.Round(time.Millisecond), lease, summary(l, r))
}

// TestFaultDatabaseReadOnly turns the relay's and producers' database
// read-only (default_transaction_read_only, on a database of the test's
// own) and back: producers' writes fail with PostgreSQL's read-only error,
// the relay logs its failures and goes on, and after the database is
// writable again everything committed is published.
func TestFaultDatabaseReadOnly(t *testing.T) {
	base := testenv.URL(t, testenv.Postgres)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	db := "chaos_ro_" + suffix()
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), `DROP DATABASE `+db+` WITH (FORCE)`); err != nil {
			t.Logf("drop database %s: %v", db, err)
		}
	})
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(base, "/"+cfg.Database, "/"+db, 1)
	natsURL, _ := startBroker(t, "private")
	e := newEnvAt(t, url, natsURL)
	relay := startRelay(t, "relay", natsjs.NewPublisher(jetStream(t, e.natsURL), natsjs.PublisherConfig{}), e.relayStore(t, "chaos-ro", ""),
		txm.ProcessorConfig{BatchSize: 50, Lease: 2 * time.Second})

	setReadOnly := func(on bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s SET default_transaction_read_only = %v`, db, on)); err != nil {
			t.Fatal(err)
		}
		// The setting applies to new sessions: end the current ones.
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db); err != nil {
			t.Fatal(err)
		}
	}
	l := newLedger()
	stop := e.producing(l, 200)
	time.Sleep(time.Second)
	setReadOnly(true)
	time.Sleep(3 * time.Second)
	setReadOnly(false)
	time.Sleep(2 * time.Second)
	stop()
	r := e.waitPublished(t, l, time.Minute)
	relay.stop(t)

	l.mu.Lock()
	refused := append([]error(nil), l.refused...)
	l.mu.Unlock()
	readOnly := 0
	for _, err := range refused {
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "25006" { // read_only_sql_transaction
			readOnly++
		}
	}
	if readOnly == 0 {
		t.Errorf("no producer write failed with PostgreSQL's read-only error (25006); refused: %v", first(errStrings(refused)))
	}
	ro := relay.logs.matching("read-only")
	if len(ro) == 0 {
		t.Errorf("the relay logged no read-only error; its warnings: %v", first(relay.logs.matching("")))
	}
	t.Logf("read-only for 3s: %d producer writes refused (%d with 25006 read_only_sql_transaction); relay logged %d read-only errors, e.g. %s; %s",
		len(refused), readOnly, len(ro), first(ro), summary(l, r))
}

func first(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	const limit = 300
	if len(s[0]) > limit {
		return s[0][:limit] + "…"
	}
	return s[0]
}

func errStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, err := range errs {
		out[i] = err.Error()
	}
	return out
}
