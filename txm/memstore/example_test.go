package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm/memstore"
)

// Saves made in a transaction become visible together when it commits, and
// vanish when it fails.
func ExampleStore_InTx() {
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	outbox := store.Outbox()

	_ = store.InTx(ctx, func(ctx context.Context) error {
		_ = outbox.Save(ctx, async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":1}`)))
		return errors.New("the order could not be stored")
	})
	_ = store.InTx(ctx, func(ctx context.Context) error {
		return outbox.Save(ctx, async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":2}`)))
	})

	msgs, _ := outbox.FindUnpublished(ctx, 10)
	for _, m := range msgs {
		fmt.Println(m.Subject(), string(m.Data()))
	}
	// Output: orders.placed {"id":2}
}

// A relay claims messages with a lease, and a failed message waits for its
// retry while holding back the rest of its partition key.
func ExampleOutbox_Claim() {
	ctx := context.Background()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	store := memstore.New(memstore.Config{Now: func() time.Time { return now }})
	outbox := store.Outbox()
	for _, name := range []string{"first", "second"} {
		_ = outbox.Save(ctx, async.NewMessage("orders", name, nil,
			async.WithMetadata(async.Metadata{async.MetaPartitionKey: "order-1"})))
	}

	batch, _ := outbox.Claim(ctx, 10, time.Minute)
	fmt.Println("claimed:", len(batch))
	_ = outbox.MarkFailed(ctx, batch[0].Message.ID(), time.Minute, "broker down")
	_ = outbox.ReleaseClaims(ctx, batch[1].Message.ID())

	batch, _ = outbox.Claim(ctx, 10, time.Minute)
	fmt.Println("claimed while the first waits:", len(batch))

	now = now.Add(time.Minute)
	batch, _ = outbox.Claim(ctx, 10, time.Minute)
	for _, c := range batch {
		fmt.Println(c.Message.MessageName(), "attempts:", c.Attempts)
	}
	// Output:
	// claimed: 2
	// claimed while the first waits: 0
	// first attempts: 1
	// second attempts: 0
}
