package txm_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// TestOutboxPublisherRefusesSaveOutsideTransaction: on a store that reports
// its transactions (memstore), a Publish through OutboxPublisher or a typed
// Outbox on it without a transaction in the context fails with
// ErrNoTransaction and saves nothing; in InTx, with txm.Standalone or with
// OutboxConfig.AllowStandalone it saves.
func TestOutboxPublisherRefusesSaveOutsideTransaction(t *testing.T) {
	t.Parallel()
	type order struct{ ID string }
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	pub := txm.OutboxPublisher(store.Outbox())(nil)
	out := txm.NewOutbox[order](pub)

	err := pub.Publish(ctx, "orders", async.NewMessage("orders", "Test", []byte("x")))
	if !errors.Is(err, txm.ErrNoTransaction) {
		t.Fatalf("Publish without a transaction = %v, want an error matching ErrNoTransaction", err)
	}
	if !strings.Contains(err.Error(), "txm.Standalone") || !strings.Contains(err.Error(), "InTx") {
		t.Errorf("error %q does not say how to pass a transaction or opt in", err)
	}
	if err := out.Publish(ctx, "orders", order{ID: "1"}); !errors.Is(err, txm.ErrNoTransaction) {
		t.Fatalf("Outbox[T] Publish without a transaction = %v, want an error matching ErrNoTransaction", err)
	}
	// A business change that rolls back, its event published with the
	// context from before the transaction: the event does not survive.
	boom := errors.New("business rule failed")
	outer := ctx
	err = store.InTx(ctx, func(context.Context) error {
		if err := out.Publish(outer, "orders", order{ID: "2"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, txm.ErrNoTransaction) {
		t.Fatalf("InTx with a Publish on the outer context = %v, want ErrNoTransaction", err)
	}
	assertSaved(t, store, 0)

	if err := store.InTx(ctx, func(ctx context.Context) error {
		return out.Publish(ctx, "orders", order{ID: "3"})
	}); err != nil {
		t.Fatalf("Publish in InTx: %v", err)
	}
	if err := out.Publish(txm.Standalone(ctx), "orders", order{ID: "4"}); err != nil {
		t.Fatalf("Publish with txm.Standalone: %v", err)
	}
	allow := txm.OutboxPublisherWithConfig(store.Outbox(), txm.OutboxConfig{AllowStandalone: true})(nil)
	if err := allow.Publish(ctx, "orders", async.NewMessage("orders", "Test", []byte("x"))); err != nil {
		t.Fatalf("Publish with OutboxConfig.AllowStandalone: %v", err)
	}
	assertSaved(t, store, 3)
}

// TestOutboxPublisherOnStoreWithoutTxReporter: a store of the user's with
// only the seed's three methods cannot say whether ctx carries a
// transaction, so the publisher saves through it as before.
func TestOutboxPublisherOnStoreWithoutTxReporter(t *testing.T) {
	t.Parallel()
	saved := 0
	pub := txm.OutboxPublisher(outboxSaveFunc(func(context.Context, async.Message) error { saved++; return nil }))(nil)
	if err := pub.Publish(context.Background(), "orders", async.NewMessage("orders", "Test", nil)); err != nil {
		t.Fatalf("Publish on a store without TxReporter = %v, want nil", err)
	}
	if saved != 1 {
		t.Fatalf("saved %d messages, want 1", saved)
	}
}
