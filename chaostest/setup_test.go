package chaostest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

// env is one run's services: a schema with the outbox, the inbox and the
// ledger's tables, and a stream, all of this run's own.
type env struct {
	pgURL   string
	natsURL string
	broker  string              // how the broker was chosen, for the report
	natsSrv *testenv.NATSServer // a private broker's process, or nil
	schema  string
	stream  string
	prefix  string // the stream's subjects are prefix.>
	topic   string
	pool    *pgxpool.Pool
	store   *sqlstore.LockingStore
	nc      *nats.Conn
	js      jetstream.JetStream
}

func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startBroker returns the NATS server a run uses, as broker says, and the
// process of a private one (nil for url).
func startBroker(t *testing.T, broker string) (string, *testenv.NATSServer) {
	t.Helper()
	shared := testenv.URL(t, testenv.NATS)
	switch broker {
	case "private":
		s := testenv.StartNATS(t)
		return s.URL(), s
	case "system":
		s := testenv.StartSystemNATS(t)
		return s.URL(), s
	case "url":
		return shared, nil
	}
	t.Fatalf("-chaos.broker %q: want private, system or url", broker)
	return "", nil
}

func newEnv(t *testing.T, broker string) *env {
	t.Helper()
	pgURL := testenv.URL(t, testenv.Postgres)
	natsURL, srv := startBroker(t, broker)
	e := newEnvAt(t, pgURL, natsURL)
	e.broker, e.natsSrv = broker, srv
	return e
}

// newEnvAt sets a run up on the PostgreSQL database and NATS server given.
func newEnvAt(t *testing.T, pgURL, natsURL string) *env {
	t.Helper()
	e := &env{pgURL: pgURL, natsURL: natsURL}
	id := suffix()
	e.schema, e.stream, e.prefix = "chaos_"+id, "CHAOS_"+strings.ToUpper(id), "chaos_"+id
	e.topic = e.prefix + ".orders"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pool, err := pgxpool.New(ctx, e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	e.pool = pool
	t.Cleanup(pool.Close)
	store, err := postgres.New(pool, sqlstore.Config{Schema: e.schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	t.Cleanup(func() { _ = store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	s := pgx.Identifier{e.schema}.Sanitize()
	for _, q := range []string{
		// The business rows: one per committed message.
		`CREATE TABLE ` + s + `.orders (id text PRIMARY KEY, key text NOT NULL, seq int NOT NULL)`,
		// No unique constraint: a message handled twice in effect is two rows.
		`CREATE TABLE ` + s + `.effects (msg_id text NOT NULL, key text NOT NULL, seq int NOT NULL, consumer text NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
		`CREATE TABLE ` + s + `.deliveries (msg_id text NOT NULL, consumer text NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		if *flagKeep {
			t.Logf("kept schema %s and stream %s", e.schema, e.stream)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := e.pool.Exec(ctx, `DROP SCHEMA `+s+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", e.schema, err)
		}
	})

	nc, err := nats.Connect(e.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	e.nc = nc
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name: e.stream, Subjects: []string{e.prefix + ".>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if *flagKeep {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, e.stream)
	})
	return e
}

// table names one of the run's tables, quoted.
func (e *env) table(name string) string { return pgx.Identifier{e.schema, name}.Sanitize() }

// relayConfig is how one relay process runs.
type relayConfig struct {
	lockClaims      bool
	workers         int
	batch           int
	batchesInFlight int
	lease           time.Duration
	publishTimeout  time.Duration
}

// relayProc is the one place that says how the suite starts a relay
// process.
func (e *env) relayProc(t *testing.T, name string, rc relayConfig, logDir string) *proc {
	t.Helper()
	bin := binary(t, "github.com/transmanager/transmanager/cmd/txm")
	args := []string{
		"relay", "-postgres", e.pgURL, "-schema", e.schema,
		"-nats", e.natsURL, "-stream", e.stream, "-subjects", e.prefix + ".>",
		"-retry-initial", "100ms", "-retry-max", "2s",
		"-workers", fmt.Sprint(rc.workers), "-batch", fmt.Sprint(rc.batch),
		"-batches-in-flight", fmt.Sprint(rc.batchesInFlight),
		"-lease", rc.lease.String(), "-publish-timeout", rc.publishTimeout.String(),
		"-poll-interval", "200ms",
	}
	if rc.lockClaims {
		args = append(args, "-lock-claims")
	}
	return newProc(t, "relay", name, bin, args, `"msg":"txm: relay started"`, logDir)
}

// consumerProc starts the suite's consumer process.
func (e *env) consumerProc(t *testing.T, name string, ackWait time.Duration, logDir string) *proc {
	t.Helper()
	bin := binary(t, "github.com/transmanager/transmanager/chaostest/cmd/chaosconsumer")
	args := []string{
		"-postgres", e.pgURL, "-schema", e.schema, "-nats", e.natsURL,
		"-topic", e.topic, "-group", "chaos", "-name", name, "-ack-wait", ackWait.String(),
		"-max-ack-pending", fmt.Sprint(consumerMaxAckPending),
	}
	return newProc(t, "consumer", name, bin, args, "ready", logDir)
}
