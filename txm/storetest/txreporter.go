package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// txEvent is the payload of the typed outbox in the TxReporter tests.
type txEvent struct {
	N int `json:"n"`
}

func testTxReporter(t *testing.T, h Harness) {
	t.Run("ReportsTransactionInsideInTxOnly", func(t *testing.T) {
		e := setup(t, h)
		r := e.txReporter()
		tr := e.transactor()
		if r.InTransaction(e.ctx) {
			t.Error("InTransaction outside InTx = true, want false")
		}
		if r.InTransaction(txm.Standalone(e.ctx)) {
			t.Error("InTransaction of a Standalone context = true, want false: the marker is no transaction")
		}
		err := tr.InTx(e.ctx, func(ctx context.Context) error {
			if !r.InTransaction(ctx) {
				t.Error("InTransaction inside InTx = false, want true")
			}
			return tr.InTx(ctx, func(ctx context.Context) error {
				if !r.InTransaction(ctx) {
					t.Error("InTransaction inside a nested InTx = false, want true")
				}
				return nil
			})
		})
		if err != nil {
			t.Fatalf("InTx = %v", err)
		}
		if r.InTransaction(e.ctx) {
			t.Error("InTransaction after InTx = true, want false")
		}
	})

	t.Run("PublisherRefusesSaveOutsideTransaction", func(t *testing.T) {
		e := setup(t, h)
		e.txReporter()
		pub := txm.OutboxPublisher(e.st.Outbox)(nil)
		typed := txm.NewOutbox[txEvent](pub)
		m := newMsg("orders", "")
		if err := pub.Publish(e.ctx, m.Subject(), m); !errors.Is(err, txm.ErrNoTransaction) {
			t.Errorf("OutboxPublisher Publish without a transaction = %v, want an error matching ErrNoTransaction", err)
		}
		if err := typed.Publish(e.ctx, "orders", txEvent{N: 1}); !errors.Is(err, txm.ErrNoTransaction) {
			t.Errorf("Outbox[T] Publish without a transaction = %v, want an error matching ErrNoTransaction", err)
		}
		equalIDs(t, "after refused saves", e.visible(), nil)
	})

	t.Run("PublisherSavesInTransactionOrStandalone", func(t *testing.T) {
		e := setup(t, h)
		e.txReporter()
		tr := e.transactor()
		pub := txm.OutboxPublisher(e.st.Outbox)(nil)
		typed := txm.NewOutbox[txEvent](pub)
		inTx, rolledBack, standalone, typedStandalone, allowed :=
			newMsg("orders", ""), newMsg("orders", ""), newMsg("orders", ""), async.NewID(), newMsg("orders", "")
		if err := tr.InTx(e.ctx, func(ctx context.Context) error {
			if err := pub.Publish(ctx, inTx.Subject(), inTx); err != nil {
				t.Errorf("Publish in InTx: %v", err)
			}
			return nil
		}); err != nil {
			t.Fatalf("InTx = %v", err)
		}
		if err := tr.InTx(e.ctx, func(ctx context.Context) error {
			if err := pub.Publish(ctx, rolledBack.Subject(), rolledBack); err != nil {
				t.Errorf("Publish in InTx: %v", err)
			}
			return errBoom
		}); !errors.Is(err, errBoom) {
			t.Fatalf("InTx = %v, want the error of fn", err)
		}
		if err := pub.Publish(txm.Standalone(e.ctx), standalone.Subject(), standalone); err != nil {
			t.Errorf("Publish with txm.Standalone: %v", err)
		}
		if err := typed.Publish(txm.Standalone(e.ctx), "orders", txEvent{N: 2}, txm.WithMessageID(typedStandalone)); err != nil {
			t.Errorf("Outbox[T] Publish with txm.Standalone: %v", err)
		}
		allow := txm.OutboxPublisherWithConfig(e.st.Outbox, txm.OutboxConfig{AllowStandalone: true})(nil)
		if err := allow.Publish(e.ctx, allowed.Subject(), allowed); err != nil {
			t.Errorf("Publish with OutboxConfig.AllowStandalone: %v", err)
		}
		sameIDs(t, "saved", e.visible(), []string{inTx.ID(), standalone.ID(), typedStandalone, allowed.ID()})
	})
}

// txReporter returns the outbox's TxReporter, skipping the test when there
// is none.
func (e *env) txReporter() txm.TxReporter {
	e.t.Helper()
	r, ok := e.st.Outbox.(txm.TxReporter)
	if !ok {
		e.t.Skip("store does not implement txm.TxReporter")
	}
	return r
}
