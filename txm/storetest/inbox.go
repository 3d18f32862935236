package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/transmanager/transmanager/txm"
)

// RunInbox runs the inbox half of the suite.
func RunInbox(t *testing.T, h Harness) {
	t.Helper()
	t.Run("Inbox", func(t *testing.T) {
		t.Run("DuplicateSave", func(t *testing.T) {
			e := setup(t, h)
			in := e.inbox("billing")
			m := newIncoming("orders")
			if err := in.Save(e.ctx, m); err != nil {
				t.Fatalf("first Save = %v", err)
			}
			err := in.Save(e.ctx, m)
			if !errors.Is(err, txm.ErrDuplicateMessage("")) {
				t.Fatalf("second Save = %v, want an error matching txm.ErrDuplicateMessage", err)
			}
			var dup txm.ErrDuplicateMessage
			if errors.As(err, &dup) && string(dup) != m.ID() {
				t.Errorf("ErrDuplicateMessage names %q, want %q", string(dup), m.ID())
			}
			if n := m.settled(); n != 0 {
				t.Errorf("the store settled the message %d times, want never", n)
			}
		})

		t.Run("GroupsAreSeparate", func(t *testing.T) {
			e := setup(t, h)
			m := newIncoming("orders")
			for _, group := range []string{"billing", "shipping", "audit"} {
				if err := e.inbox(group).Save(e.ctx, m); err != nil {
					t.Fatalf("Save in group %s = %v", group, err)
				}
			}
			for _, group := range []string{"billing", "shipping", "audit"} {
				if err := e.inbox(group).Save(e.ctx, m); !errors.Is(err, txm.ErrDuplicateMessage("")) {
					t.Errorf("second Save in group %s = %v, want ErrDuplicateMessage", group, err)
				}
			}
		})

		t.Run("ConcurrentSavesOfOneID", func(t *testing.T) {
			e := setup(t, h)
			in := e.inbox("billing")
			m := newIncoming("orders")
			const savers = 8
			errs := make([]error, savers)
			var wg sync.WaitGroup
			for i := range savers {
				wg.Go(func() { errs[i] = in.Save(e.ctx, m) })
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, txm.ErrDuplicateMessage("")):
					t.Errorf("concurrent Save = %v, want nil or ErrDuplicateMessage", err)
				}
			}
			if ok != 1 {
				t.Fatalf("%d concurrent Saves of one ID succeeded, want exactly 1", ok)
			}
		})

		t.Run("RollbackForgetsTheSave", func(t *testing.T) {
			e := setup(t, h)
			in := e.inbox("billing")
			tr, ok := in.(txm.Transactor)
			if !ok {
				tr, ok = e.st.Outbox.(txm.Transactor)
			}
			if !ok {
				t.Skip("store does not implement txm.Transactor")
			}
			m := newIncoming("orders")
			err := tr.InTx(e.ctx, func(ctx context.Context) error {
				if err := in.Save(ctx, m); err != nil {
					t.Errorf("Save in InTx = %v", err)
				}
				return errBoom
			})
			if !errors.Is(err, errBoom) {
				t.Fatalf("InTx = %v, want the error of fn", err)
			}
			if err := in.Save(e.ctx, m); err != nil {
				t.Fatalf("Save after the rollback = %v, want nil", err)
			}
			err = tr.InTx(e.ctx, func(ctx context.Context) error {
				if err := in.Save(ctx, m); !errors.Is(err, txm.ErrDuplicateMessage("")) {
					t.Errorf("Save in InTx of a saved ID = %v, want ErrDuplicateMessage", err)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("InTx = %v", err)
			}
		})

		t.Run("SaveWithCancelledContext", func(t *testing.T) {
			e := setup(t, h)
			in := e.inbox("billing")
			m := newIncoming("orders")
			ctx, cancel := context.WithCancel(e.ctx)
			cancel()
			if err := in.Save(ctx, m); !errors.Is(err, context.Canceled) {
				t.Fatalf("Save with a cancelled context = %v, want an error matching context.Canceled", err)
			}
			if err := in.Save(e.ctx, m); err != nil {
				t.Fatalf("Save after the cancelled one = %v, want nil (nothing stored)", err)
			}
		})
	})
}
