// Command relaymain is a stand-in for txm relay with the flags the crash
// suite uses, until the command exists.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	pg := flag.String("postgres", "", "")
	schema := flag.String("schema", "", "")
	natsURL := flag.String("nats", "", "")
	stream := flag.String("stream", "", "")
	subjects := flag.String("subjects", "", "")
	workers := flag.Int("workers", 0, "")
	batch := flag.Int("batch", 0, "")
	inflight := flag.Int("batches-in-flight", 0, "")
	lock := flag.Bool("lock-claims", false, "")
	poll := flag.Duration("poll-interval", 0, "")
	lease := flag.Duration("lease", 0, "")
	pubTimeout := flag.Duration("publish-timeout", 0, "")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := pgxpool.New(ctx, *pg)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := sqlstore.NewPostgres(pool, sqlstore.Config{Schema: *schema})
	if err != nil {
		return err
	}
	defer store.Close()
	nc, err := nats.Connect(*natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if *stream != "" {
		if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
			Name: *stream, Subjects: strings.Split(*subjects, ","), Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		}); err != nil {
			return err
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	relay, err := txm.NewOutboxProcessorWithConfig(natsjs.NewPublisher(js, natsjs.PublisherConfig{}), store.Outbox(), txm.ProcessorConfig{
		Workers: *workers, BatchSize: *batch, BatchesInFlight: *inflight, LockClaims: *lock,
		PollInterval: *poll, Lease: *lease, PublishTimeout: *pubTimeout, Logger: logger,
	})
	if err != nil {
		return err
	}
	return relay.Start(ctx)
}
