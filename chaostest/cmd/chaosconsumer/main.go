// Command chaosconsumer is the consumer process of the crash suite: a
// JetStream subscriber whose handler, behind a PostgreSQL inbox, records
// each message's effect in a table with no unique constraint, so a message
// handled twice in effect shows as two rows. Every delivery is also
// recorded, outside the inbox's transaction, to count redeliveries. It
// runs until SIGTERM or SIGINT, or until it is killed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaosconsumer:", err)
		os.Exit(1)
	}
}

// order is the payload the suite's producers write.
type order struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

func run() error {
	pg := flag.String("postgres", "", "PostgreSQL URL")
	schema := flag.String("schema", "", "schema of the suite's tables and the inbox")
	natsURL := flag.String("nats", "", "NATS URL")
	topic := flag.String("topic", "", "subject to subscribe to")
	group := flag.String("group", "chaos", "consumer group")
	name := flag.String("name", "consumer", "this process's name in the effects table")
	ackWait := flag.Duration("ack-wait", 5*time.Second, "JetStream ack wait")
	concurrency := flag.Int("concurrency", 8, "handlers at once")
	maxAckPending := flag.Int("max-ack-pending", 64, "deliveries unacked at once across the group (JetStream MaxAckPending)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	pool, err := pgxpool.New(ctx, *pg)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := postgres.New(pool, sqlstore.Config{Schema: *schema})
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

	effects := pgx.Identifier{*schema, "effects"}.Sanitize()
	deliveries := pgx.Identifier{*schema, "deliveries"}.Sanitize()
	effect := async.MessageHandlerFunc(func(ctx context.Context, m async.IncomingMessage) error {
		var o order
		if err := json.Unmarshal(m.Data(), &o); err != nil {
			return fmt.Errorf("decode %s: %w", m.ID(), err)
		}
		tx, ok := sqlstore.PgxTxFromContext(ctx)
		if !ok {
			return fmt.Errorf("no transaction in the handler's context")
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (msg_id, key, seq, consumer) VALUES ($1, $2, $3, $4)",
			m.ID(), o.Key, o.Seq, *name)
		return err
	})
	inboxed := txm.InboxHandler(store.Inbox(*group))(effect)
	handler := async.MessageHandlerFunc(func(ctx context.Context, m async.IncomingMessage) error {
		if _, err := pool.Exec(ctx, "INSERT INTO "+deliveries+" (msg_id, consumer) VALUES ($1, $2)", m.ID(), *name); err != nil {
			return err
		}
		return inboxed.HandleMessage(ctx, m)
	})

	sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{Logger: logger, MaxRedeliveries: -1, MaxAckPending: *maxAckPending})
	defer sub.Close()
	if _, err := sub.Subscribe(ctx, *topic, handler, async.GroupName(*group),
		async.AckWait(*ackWait), async.Concurrency(*concurrency)); err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
