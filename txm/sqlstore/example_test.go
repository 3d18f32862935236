package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// A business write and its event, saved in one SQLite transaction with
// InTx, then claimed and settled as the relay does.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sqlstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlstore.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := store.DB().ExecContext(ctx, "CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)"); err != nil {
		log.Fatal(err)
	}

	err = store.InTx(ctx, func(ctx context.Context) error {
		tx, _ := sqlstore.TxFromContext(ctx)
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES (?, ?)", "o-1", 1250); err != nil {
			return err
		}
		msg := async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":"o-1"}`),
			async.WithID("msg-1"), async.WithMetadata(async.Metadata{async.MetaPartitionKey: "o-1"}))
		return store.Outbox().Save(ctx, msg)
	})
	if err != nil {
		log.Fatal(err)
	}

	claimed, err := store.Outbox().Claim(ctx, 10, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range claimed {
		fmt.Println("claimed", c.Message.ID(), c.Message.Subject(), c.Message.Metadata().PartitionKey())
	}
	if err := store.Outbox().MarkPublished(ctx, "msg-1"); err != nil {
		log.Fatal(err)
	}
	stats, err := store.Outbox().Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending", stats.Pending)
	// Output:
	// claimed msg-1 orders.placed o-1
	// pending 0
}

// A save in a database/sql transaction of the caller's own: a rollback
// takes the message with it, and an inbox recognises a redelivery.
func ExampleWithTx() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sqlstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlstore.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	tx, err := store.DB().BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	msg := async.NewMessage("orders.placed", "OrderPlaced", nil, async.WithID("msg-2"))
	if err := store.Outbox().Save(sqlstore.WithTx(ctx, tx), msg); err != nil {
		log.Fatal(err)
	}
	_ = tx.Rollback()
	unpublished, _ := store.Outbox().FindUnpublished(ctx, 10)
	fmt.Println("unpublished after rollback:", len(unpublished))

	billing := store.Inbox("billing")
	fmt.Println("first delivery:", billing.Save(ctx, delivery{msg}))
	err = billing.Save(ctx, delivery{msg})
	fmt.Println("redelivery is a duplicate:", errors.Is(err, txm.ErrDuplicateMessage("")))
	// Output:
	// unpublished after rollback: 0
	// first delivery: <nil>
	// redelivery is a duplicate: true
}

// A PostgreSQL store on a pgx pool, with the message saved in the caller's
// own pgx transaction.
func Example_postgres() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := postgres.New(pool, sqlstore.Config{Schema: "app"})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "UPDATE app.orders SET state = 'placed' WHERE id = $1", "o-1"); err != nil {
		log.Fatal(err)
	}
	msg := async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":"o-1"}`))
	if err := store.Outbox().Save(sqlstore.WithPgxTx(ctx, tx), msg); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}

// A locked claim in a transaction of the store's own: the messages stay
// claimed until the transaction ends, and their outcome commits with it.
// The relay does this with txm.ProcessorConfig{LockClaims: true}.
func ExampleLockingOutbox_ClaimLocked() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := postgres.New(pool, sqlstore.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	var broker async.MessagePublisher // the application's broker
	outbox := store.Outbox()
	err = outbox.InTx(ctx, func(ctx context.Context) error {
		claimed, err := outbox.ClaimLocked(ctx, 100, time.Minute)
		if err != nil {
			return err
		}
		var published []string
		for _, c := range claimed {
			if err := broker.Publish(ctx, c.Message.Subject(), c.Message); err != nil {
				break // the rest of the batch stays pending: keys keep their order
			}
			published = append(published, c.Message.ID())
		}
		return outbox.MarkPublished(ctx, published...)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// delivery stands for a message handed over by a broker.
type delivery struct{ async.Message }

func (delivery) ReceivedAt() time.Time { return time.Now() }
func (delivery) Ack() error            { return nil }
func (delivery) NAck() error           { return nil }
func (delivery) Extend() error         { return nil }
func (delivery) Kill() error           { return nil }
