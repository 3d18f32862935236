package txm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// TestUndecodableMessageDeadLettersWithItsError: a message the typed inbox
// cannot decode goes to the broker's dead letters with the decode error,
// through the inbox middleware, and the handler is not called.
func TestUndecodableMessageDeadLettersWithItsError(t *testing.T) {
	t.Parallel()
	broker := memory.New(memory.Config{})
	defer func() { _ = broker.Close() }()
	store := memstore.New(memstore.Config{})
	called := make(chan struct{}, 1)
	typed := txm.NewInbox(func(context.Context, orderPlaced, async.IncomingMessage) error {
		called <- struct{}{}
		return nil
	})
	sub, err := broker.Subscribe(context.Background(), "orders", txm.InboxHandler(store.Inbox("billing"))(typed), async.GroupName("billing"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	msg := async.NewMessage("orders", "OrderPlaced", []byte("{}"), async.WithMetadata(async.Metadata{async.MetaContentType: "application/x-unknown"}))
	if err := broker.Publish(context.Background(), "orders", msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for len(broker.DeadLetters("orders")) == 0 {
		select {
		case <-called:
			t.Fatal("the handler was called for an undecodable message")
		case <-deadline:
			t.Fatal("the undecodable message did not go to dead letters within 5s")
		case <-time.After(time.Millisecond):
		}
	}
	dl := broker.DeadLetters("orders")[0]
	var derr *txm.DecodeError
	if dl.Message.ID() != msg.ID() || dl.Reason != "killed" || !errors.As(dl.HandlerErr, &derr) || derr.ContentType != "application/x-unknown" {
		t.Errorf("dead letter %s, reason %q, error %v; want %s killed with a *txm.DecodeError", dl.Message.ID(), dl.Reason, dl.HandlerErr, msg.ID())
	}
}
