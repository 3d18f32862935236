package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

// openBroker connects the demo to JetStream when -nats is set, and to the
// in-process broker otherwise.
func (e *demoEnv) openBroker(ctx context.Context, cfg demoConfig) error {
	if cfg.nats == "" {
		b := memory.New(memory.Config{})
		e.pub, e.sub = b, b
		e.brokerName = "in-process (async/memory)"
		e.closers = append(e.closers, func() { _ = b.Close() })
		return nil
	}
	nc, err := nats.Connect(cfg.nats, nats.Name("txm demo"))
	if err != nil {
		return fmt.Errorf("demo: connect to NATS: %w", err)
	}
	e.closers = append(e.closers, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("demo: JetStream: %w", err)
	}
	// The demo owns its stream: it creates it afresh and deletes it after.
	const stream = "TXM_DEMO"
	_ = js.DeleteStream(ctx, stream)
	if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name: stream, Subjects: []string{"orders.>"}, Duplicates: time.Minute,
	}); err != nil {
		return fmt.Errorf("demo: create stream: %w", err)
	}
	e.closers = append(e.closers, func() { _ = js.DeleteStream(context.Background(), stream) })
	sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{})
	e.closers = append(e.closers, func() { _ = sub.Close() })
	e.pub, e.sub = natsjs.NewPublisher(js, natsjs.PublisherConfig{}), sub
	e.brokerName = "NATS JetStream (" + redactURL(cfg.nats) + ", stream " + stream + ")"
	return nil
}

// openPostgresDemo opens a database/sql PostgreSQL store in its own schema,
// so the demo never touches other tables.
func openPostgresDemo(ctx context.Context, dsn string) (*sqlstore.LockingStore, *sql.DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: open PostgreSQL: %w", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS txm_demo`); err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("demo: create schema: %w", err)
	}
	db.Close()
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: parse PostgreSQL URL: %w", err)
	}
	q := u.Query()
	q.Set("search_path", "txm_demo")
	u.RawQuery = q.Encode()
	db, err = sql.Open("pgx", u.String())
	if err != nil {
		return nil, nil, fmt.Errorf("demo: open PostgreSQL: %w", err)
	}
	store, err := postgres.NewDB(db, sqlstore.Config{Schema: "txm_demo"})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return store, db, nil
}

// redactURL hides a password in a URL printed to the user.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "?"
	}
	return u.Redacted()
}
