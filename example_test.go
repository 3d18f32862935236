package transmanager_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// The quick start of the README: a typed outbox saving in a transaction,
// the relay, and a typed consumer behind an inbox.
func Example() {
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	broker := memory.New(memory.Config{})
	defer broker.Close()
	codecs := codec.NewRegistry(codec.JSON())
	_ = codecs.Register("orders.*", codec.Msgpack())

	// Consumer: each message handled once, in the handler's transaction.
	handled := make(chan OrderPlaced, 1)
	handle := func(ctx context.Context, o OrderPlaced, msg async.IncomingMessage) error {
		handled <- o
		return nil
	}
	h := txm.InboxHandler(store.Inbox("billing"))(txm.NewInbox(handle, txm.WithCodecs(codecs)))
	sub, _ := broker.Subscribe(ctx, "orders.placed", h, async.GroupName("billing"))
	defer sub.Unsubscribe()

	// Producer: the event is saved in the business transaction.
	out := txm.NewOutbox[OrderPlaced](txm.OutboxPublisher(store.Outbox())(nil), txm.WithCodecs(codecs))
	err := store.InTx(ctx, func(ctx context.Context) error {
		// ... write the order through ctx's transaction ...
		return out.Publish(ctx, "orders.placed", OrderPlaced{OrderID: "o-1", Cents: 1250}, txm.WithPartitionKey("o-1"))
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Relay: publishes committed messages.
	relay, _ := txm.NewOutboxProcessorWithConfig(broker, store.Outbox(), txm.ProcessorConfig{Logger: slog.New(slog.DiscardHandler)})
	relayCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- relay.Start(relayCtx) }()

	select {
	case o := <-handled:
		fmt.Printf("billing handled %s for %d cents\n", o.OrderID, o.Cents)
	case <-time.After(5 * time.Second):
		fmt.Println("timed out")
	}
	stop()
	fmt.Println("relay stopped:", <-done)
	// Output:
	// billing handled o-1 for 1250 cents
	// relay stopped: <nil>
}
