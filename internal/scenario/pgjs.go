// Package scenario holds the benchmark scenarios that `txm bench`,
// bench/drainrun and the benchmarks under bench/ run: a PostgreSQL outbox
// drained into a JetStream stream, by the library's relay and by the strong
// hand-written loop that a user would write instead, with the CPU each
// process used; and, for the embedded default, a SQLite outbox drained into
// the in-process broker ([DrainEmbedded]).
package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/retry"
)

// Env is a PostgreSQL schema and a JetStream stream of a scenario's own,
// removed by Close.
type Env struct {
	URL    string // the PostgreSQL URL
	Schema string
	Pool   *pgxpool.Pool // MaxConns 8, open until Close

	NC     *nats.Conn
	JS     jetstream.JetStream
	Stream jetstream.Stream
	Topic  string // the one subject the stream captures
}

// Random returns a short random name part.
func Random() string {
	buf := make([]byte, 5)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// Open creates a schema in the database at pgURL and a file-storage stream
// on the NATS server at natsURL, both named at random.
func Open(ctx context.Context, pgURL, natsURL string) (_ *Env, err error) {
	e := &Env{URL: pgURL, Schema: "txm_scn_" + Random()}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	cfg, err := pgxpool.ParseConfig(pgURL)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", pgURL, err)
	}
	cfg.MaxConns = 8
	if e.Pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	if _, err := e.Pool.Exec(ctx, "CREATE SCHEMA "+e.Schema); err != nil {
		return nil, fmt.Errorf("create schema: %w", err)
	}
	if err := e.openStream(ctx, natsURL); err != nil {
		return nil, err
	}
	return e, nil
}

// openStream connects e to the NATS server at natsURL and creates e's
// stream, named at random.
func (e *Env) openStream(ctx context.Context, natsURL string) error {
	var err error
	if e.NC, err = nats.Connect(natsURL, nats.Name("txm scenario")); err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	if e.JS, err = jetstream.New(e.NC); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	name := "TXMSCN_" + strings.ToUpper(Random())
	e.Topic = "txmscn." + strings.ToLower(name) + ".events"
	cfg := jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{e.Topic},
		Storage:  jetstream.FileStorage,
		// Short, so that the server's duplicate map stays small.
		Duplicates: 10 * time.Second,
	}
	// A server that fails to create the stream's files (a 500: a full disk
	// or no file descriptor left for a moment, while other tests share the
	// server) is asked again, five times within about three seconds; any
	// other error is final.
	again := retry.Policy{InitialInterval: 200 * time.Millisecond, MaxAttempts: 5}
	err = retry.Do(ctx, again, func(ctx context.Context) error {
		var err error
		if e.Stream, err = natsjs.EnsureStream(ctx, e.JS, cfg); err != nil && !serverFault(err) {
			return retry.Permanent(err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create stream: %w", err)
	}
	return nil
}

// serverFault reports whether err is a JetStream API error that the server
// reported as its own failure (code 500), which may pass.
func serverFault(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code >= 500
}

// Close drops the schema and the stream and closes the connections.
func (e *Env) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if e.Stream != nil {
		errs = append(errs, e.JS.DeleteStream(ctx, e.Stream.CachedInfo().Config.Name))
	}
	if e.NC != nil {
		e.NC.Close()
	}
	if e.Pool != nil {
		_, err := e.Pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+e.Schema+" CASCADE")
		errs = append(errs, err)
		e.Pool.Close()
	}
	return errors.Join(errs...)
}

// Settle makes a filled table's starting point the same for every
// implementation: fresh statistics and visibility map, and no dirty page
// left for a checkpoint to write during the timed part.
func (e *Env) Settle(ctx context.Context, table string) error {
	if _, err := e.Pool.Exec(ctx, "VACUUM ANALYZE "+table); err != nil {
		return fmt.Errorf("vacuum %s: %w", table, err)
	}
	if _, err := e.Pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// StreamMessages returns how many messages the stream holds.
func (e *Env) StreamMessages(ctx context.Context) (uint64, error) {
	info, err := e.Stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.Msgs, nil
}

// Payload returns a JSON document of size bytes (at least about 100).
func Payload(size int) []byte {
	p := []byte(`{"order_id":"0192f7a0-7c1e-7d2a-9b1e-5f3c2a1d0e9f","customer":"c-1042","cents":12999,"note":"`)
	p = append(p, strings.Repeat("x", max(size-len(p)-2, 0))...)
	return append(p, `"}`...)
}
