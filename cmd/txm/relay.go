package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// Relay states, which /healthz reports.
const (
	relayStarting int32 = iota // waiting for the store and the broker
	relayRunning
	relayStopping
)

func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseRelayFlags(args, os.Getenv, stdout, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	return relayMain(ctx, cfg, log)
}

// relay is a running txm relay: its store, broker and listener, each closed
// by close in the reverse order of their opening.
type relay struct {
	cfg     relayConfig
	log     *slog.Logger
	store   *relayStore
	nc      *nats.Conn
	js      jetstream.JetStream
	state   atomic.Int32
	closers []func()
}

func (r *relay) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// relayMain runs the relay until ctx ends, then closes what it opened and
// logs its stop as its last record. An error is a failure (exit status 1),
// logged as the last record and returned as a *loggedError, so that stderr
// holds only JSON records.
func relayMain(ctx context.Context, cfg relayConfig, log *slog.Logger) (err error) {
	r := &relay{cfg: cfg, log: log}
	stopped := "txm relay: stopped" // the last record of a stop on a signal
	defer func() {
		r.close()
		bg := context.WithoutCancel(ctx)
		switch {
		case err != nil && ctx.Err() != nil && !errors.Is(err, async.ErrClosed):
			// Cut short by the stop, as it starts (the stream's creation).
			log.LogAttrs(bg, slog.LevelInfo, stopped, slog.String("reason", stopReason(ctx)), slog.Any("error", err))
			err = nil
		case err != nil:
			log.LogAttrs(bg, slog.LevelError, "txm relay: failed", slog.Any("error", err))
			err = &loggedError{err}
		default:
			log.LogAttrs(bg, slog.LevelInfo, stopped, slog.String("reason", stopReason(ctx)))
		}
	}()
	if r.store, err = openRelayStore(ctx, cfg, log); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.closers = append(r.closers, r.store.close)
	if err := r.connectBroker(); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	var obs txm.Observer
	var pubMW []async.MessagePublisherMiddleware
	if cfg.httpAddr != "" {
		m, err := newRelayMetrics(r.store.Store.Outbox())
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		r.closers = append(r.closers, m.close)
		stopHTTP, err := r.serveHTTP(ctx, m)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		r.closers = append(r.closers, stopHTTP)
		obs, pubMW = m.tel, append(pubMW, m.tel.PublishMiddleware())
	}
	if !r.waitReady(ctx) {
		stopped = "txm relay: stopped before the store and the broker answered"
		return nil
	}
	if err := r.ensureStream(ctx); err != nil {
		return fmt.Errorf("relay: %w", err)
	}

	pcfg := cfg.processor
	pcfg.Logger = log
	pcfg.Observer = obs
	pub := async.ChainPublisher(natsjs.NewPublisher(r.js, natsjs.PublisherConfig{Logger: log}), pubMW...)
	proc, err := txm.NewOutboxProcessorWithConfig(pub, r.store.relayed, pcfg)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.state.Store(relayRunning)
	err = proc.Start(ctx)
	r.state.Store(relayStopping)
	return err
}

// stopReason says why ctx ended, for the stop record.
func stopReason(ctx context.Context) string {
	if cause := context.Cause(ctx); cause != nil {
		return cause.Error()
	}
	return "stopped"
}

// relayStore is the relay's store and how to ping and close it.
type relayStore struct {
	*sqlstore.Store
	// relayed is the outbox the relay claims from: on PostgreSQL and
	// MySQL a *sqlstore.LockingOutbox, which -lock-claims needs.
	relayed txm.OutboxStore
	kind    string // "postgres", "sqlite" or "mysql"
	ping    func(context.Context) error
	close   func()
}

// openRelayStore opens the selected store. PostgreSQL's is opened without
// connecting: the relay waits for the database in waitReady. A SQLite file
// must exist already, and a MySQL server answer at once.
func openRelayStore(ctx context.Context, cfg relayConfig, log *slog.Logger) (*relayStore, error) {
	scfg := sqlstore.Config{Schema: cfg.schema, PollOnly: cfg.pollOnly, KeepPublished: cfg.keepPublished, Logger: log}
	if cfg.sqlite != "" {
		if isFilePath(cfg.sqlite) {
			if _, err := os.Stat(cfg.sqlite); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("no SQLite database at %s (txm migrate -sqlite %s creates one)", cfg.sqlite, cfg.sqlite)
			} else if err != nil {
				return nil, err
			}
		}
		s, err := sqlite.Open(ctx, cfg.sqlite, scfg)
		if err != nil {
			return nil, err
		}
		return &relayStore{Store: s, relayed: s.Outbox(), kind: "sqlite", ping: s.DB().PingContext, close: func() { _ = s.Close() }}, nil
	}
	if cfg.mysql != "" {
		// mysql.Open pings: with MySQL the relay needs its database at start.
		s, err := mysql.Open(ctx, cfg.mysql, scfg)
		if err != nil {
			return nil, err
		}
		return &relayStore{Store: s.Store, relayed: s.Outbox(), kind: "mysql", ping: s.DB().PingContext, close: func() { _ = s.Close() }}, nil
	}
	pc, err := pgxpool.ParseConfig(cfg.postgres)
	if err != nil {
		return nil, fmt.Errorf("parse the PostgreSQL URL: %w", err)
	}
	// Each batch in flight may hold a connection (with -lock-claims, for
	// the whole publish), beside the LISTEN connection and the marks.
	if want := int32(cfg.processor.BatchesInFlight + 3); !hasPoolMaxConns(cfg.postgres) && pc.MaxConns < want {
		pc.MaxConns = want
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL: %w", err)
	}
	s, err := postgres.New(pool, scfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &relayStore{Store: s.Store, relayed: s.Outbox(), kind: "postgres", ping: pool.Ping, close: func() { _ = s.Close(); pool.Close() }}, nil
}

// hasPoolMaxConns reports whether a PostgreSQL URL or keyword/value string
// sets the pool's size itself.
func hasPoolMaxConns(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Query().Has("pool_max_conns")
	}
	return strings.Contains(dsn, "pool_max_conns")
}

// connectBroker connects to NATS. The connection retries by itself, from
// the first attempt on, so the relay may start before the broker.
func (r *relay) connectBroker() error {
	log := r.log
	nc, err := nats.Connect(r.cfg.nats,
		nats.Name("txm relay"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("txm relay: connected to NATS", slog.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("txm relay: disconnected from NATS", slog.Any("error", err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("txm relay: reconnected to NATS", slog.String("server", nc.ConnectedUrlRedacted()))
		}),
	)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	r.closers = append(r.closers, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}
	r.nc, r.js = nc, js
	return nil
}

// check asks the store and the broker whether they answer, each within the
// health timeout, and returns the reasons they do not (none when both do).
// With tables, it also reads the outbox table (its dead letters, through
// an index), so that a database not migrated yet is a reason too.
func (r *relay) check(ctx context.Context, tables bool) []string {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.healthLimit)
	defer cancel()
	var why []string
	if err := r.store.ping(ctx); err != nil {
		why = append(why, fmt.Sprintf("store (%s): %v", r.store.kind, err))
	} else if tables {
		if _, err := r.store.Outbox().DeadLetters(ctx, txm.DeadLetterFilter{Limit: 1}); errors.Is(err, sqlstore.ErrNotMigrated) {
			why = append(why, fmt.Sprintf("store (%s): the tables do not exist: run txm migrate", r.store.kind))
		} else if err != nil {
			why = append(why, fmt.Sprintf("store (%s): read the outbox: %v", r.store.kind, err))
		}
	}
	if st := r.nc.Status(); st != nats.CONNECTED {
		why = append(why, fmt.Sprintf("broker: not connected to NATS (%s)", strings.ToLower(st.String())))
	} else if _, err := r.js.AccountInfo(ctx); err != nil {
		why = append(why, fmt.Sprintf("broker: JetStream: %v", err))
	}
	return why
}

// waitReady waits until the store and the broker answer, logging why not
// when that changes. It returns false when ctx ends first.
func (r *relay) waitReady(ctx context.Context) bool {
	b := retry.Policy{InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second}.NewBackOff()
	last := ""
	for {
		why := r.check(ctx, true)
		if ctx.Err() != nil {
			return false
		}
		if len(why) == 0 {
			if last != "" {
				r.log.LogAttrs(ctx, slog.LevelInfo, "txm relay: the store and the broker answer")
			}
			return true
		}
		if reason := strings.Join(why, "; "); reason != last {
			r.log.LogAttrs(ctx, slog.LevelWarn, "txm relay: waiting for the store and the broker", slog.String("reason", reason))
			last = reason
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// ensureStream creates the -stream when it does not exist; an existing
// stream keeps its configuration.
func (r *relay) ensureStream(ctx context.Context) error {
	if r.cfg.stream == "" {
		return nil
	}
	st, err := r.js.Stream(ctx, r.cfg.stream)
	switch {
	case err == nil:
		r.log.LogAttrs(ctx, slog.LevelInfo, "txm relay: stream exists, kept as it is",
			slog.String("stream", r.cfg.stream), slog.Any("subjects", st.CachedInfo().Config.Subjects))
		return nil
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("look up stream %s: %w", r.cfg.stream, err)
	}
	if _, err := natsjs.EnsureStream(ctx, r.js, jetstream.StreamConfig{
		Name: r.cfg.stream, Subjects: r.cfg.subjects, Storage: jetstream.FileStorage, Duplicates: r.cfg.duplicates,
	}); err != nil {
		return err
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "txm relay: stream created",
		slog.String("stream", r.cfg.stream), slog.Any("subjects", r.cfg.subjects), slog.String("duplicates", r.cfg.duplicates.String()))
	return nil
}
