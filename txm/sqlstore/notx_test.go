package sqlstore

import (
	"context"
	"errors"
	"testing"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
)

type notxOrder struct {
	ID string `json:"id"`
}

// TestPublishNeedsTheCallersTransaction: a Publish through OutboxPublisher
// whose context lacks the caller's transaction (a forgotten WithPgxTx or
// WithTx) fails with ErrNoTransaction and saves nothing, so the business
// change rolling back leaves no event; with the transaction passed, the
// event commits or rolls back with it; txm.Standalone saves on its own.
func TestPublishNeedsTheCallersTransaction(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			if kind != kindSQLite {
				testenv.URL(t, testenv.Postgres)
			}
			ctx := context.Background()
			s := newTestStore(t, kind, Config{})
			b := newBusiness(t, s)
			out := txm.NewOutbox[notxOrder](txm.OutboxPublisher(s.Outbox())(nil))
			pending := func() int64 {
				t.Helper()
				st, err := s.Outbox().Stats(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return st.Pending
			}

			// The mistake: the order is written in the caller's
			// transaction, the event is published with the bare context.
			err := b.inUserTx(ctx, false, func(txCtx context.Context) error {
				if err := b.insert(txCtx, "o-1"); err != nil {
					return err
				}
				return out.Publish(ctx, "orders.placed", notxOrder{ID: "o-1"})
			})
			if !errors.Is(err, txm.ErrNoTransaction) {
				t.Fatalf("Publish without the transaction = %v, want an error matching ErrNoTransaction", err)
			}
			if n := pending(); n != 0 {
				t.Fatalf("%d messages saved by the refused Publish, want 0", n)
			}

			// The caller's transaction passed with WithPgxTx/WithTx.
			for _, commit := range []bool{false, true} {
				if err := b.inUserTx(ctx, commit, func(ctx context.Context) error {
					if !s.Outbox().InTransaction(ctx) {
						t.Error("InTransaction of the caller's transaction = false, want true")
					}
					if err := b.insert(ctx, "o-2"); err != nil {
						return err
					}
					return out.Publish(ctx, "orders.placed", notxOrder{ID: "o-2"})
				}); err != nil {
					t.Fatalf("Publish in the caller's transaction (commit %v): %v", commit, err)
				}
			}
			if n, orders := pending(), b.count(t); n != 1 || orders != 1 {
				t.Fatalf("after a rolled-back and a committed transaction: %d messages, %d orders; want 1 and 1", n, orders)
			}

			if err := out.Publish(txm.Standalone(ctx), "orders.audit", notxOrder{ID: "o-3"}); err != nil {
				t.Fatalf("Publish with txm.Standalone: %v", err)
			}
			if n := pending(); n != 2 {
				t.Fatalf("%d messages after a standalone Publish, want 2", n)
			}
		})
	}
}
