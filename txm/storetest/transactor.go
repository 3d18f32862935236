package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/transmanager/transmanager/txm"
)

var errBoom = errors.New("storetest: boom")

func testTransactor(t *testing.T, h Harness) {
	t.Run("CommitMakesSavesVisible", func(t *testing.T) {
		e := setup(t, h)
		tr := e.transactor()
		in := e.inbox("g")
		msgs := seq(2, "orders", "")
		im := newIncoming("orders")
		err := tr.InTx(e.ctx, func(ctx context.Context) error {
			e.save(ctx, msgs...)
			if err := in.Save(ctx, im); err != nil {
				t.Errorf("inbox Save in InTx: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("InTx = %v", err)
		}
		equalIDs(t, "after commit", e.visible(), msgIDs(msgs))
		if err := in.Save(e.ctx, im); !errors.Is(err, txm.ErrDuplicateMessage("")) {
			t.Errorf("inbox Save after commit = %v, want ErrDuplicateMessage", err)
		}
	})

	t.Run("ErrorRollsBackEverySave", func(t *testing.T) {
		e := setup(t, h)
		tr := e.transactor()
		in := e.inbox("g")
		im := newIncoming("orders")
		err := tr.InTx(e.ctx, func(ctx context.Context) error {
			e.save(ctx, seq(3, "orders", "k")...)
			if err := in.Save(ctx, im); err != nil {
				t.Errorf("inbox Save in InTx: %v", err)
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("InTx = %v, want the error of fn", err)
		}
		equalIDs(t, "after rollback", e.visible(), nil)
		if err := in.Save(e.ctx, im); err != nil {
			t.Errorf("inbox Save after rollback = %v, want nil", err)
		}
	})

	t.Run("PanicRollsBack", func(t *testing.T) {
		e := setup(t, h)
		tr := e.transactor()
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Error("InTx swallowed the panic of fn")
				}
			}()
			_ = tr.InTx(e.ctx, func(ctx context.Context) error {
				e.save(ctx, newMsg("orders", ""))
				panic("storetest: panic in fn")
			})
		}()
		equalIDs(t, "after panic", e.visible(), nil)
	})

	t.Run("DuplicateInsideTransactionKeepsIt", func(t *testing.T) {
		e := setup(t, h)
		tr := e.transactor()
		in := e.inbox("g")
		committed := newMsg("orders", "")
		e.save(e.ctx, committed)
		m1, m2 := newMsg("orders", ""), newMsg("orders", "")
		im := newIncoming("orders")
		err := tr.InTx(e.ctx, func(ctx context.Context) error {
			e.save(ctx, m1)
			if err := e.st.Outbox.Save(ctx, committed); !errors.Is(err, txm.ErrDuplicateMessage("")) {
				t.Errorf("Save of a committed ID in InTx = %v, want ErrDuplicateMessage", err)
			}
			if err := e.st.Outbox.Save(ctx, m1); !errors.Is(err, txm.ErrDuplicateMessage("")) {
				t.Errorf("second Save of an ID in the same InTx = %v, want ErrDuplicateMessage", err)
			}
			if err := in.Save(ctx, im); err != nil {
				t.Errorf("inbox Save in InTx: %v", err)
			}
			if err := in.Save(ctx, im); !errors.Is(err, txm.ErrDuplicateMessage("")) {
				t.Errorf("second inbox Save in the same InTx = %v, want ErrDuplicateMessage", err)
			}
			e.save(ctx, m2)
			return nil
		})
		if err != nil {
			t.Fatalf("InTx after duplicates = %v, want nil", err)
		}
		equalIDs(t, "after commit", e.visible(), []string{committed.ID(), m1.ID(), m2.ID()})
		if err := in.Save(e.ctx, im); !errors.Is(err, txm.ErrDuplicateMessage("")) {
			t.Errorf("inbox Save after commit = %v, want ErrDuplicateMessage", err)
		}
	})

	t.Run("Nested", func(t *testing.T) {
		for _, tc := range []struct {
			name               string
			inner, outer       error // returned by the inner fn and (when not passing inner's on) the outer fn
			passInner, visible bool
		}{
			{name: "InnerErrorRollsBackAll", inner: errBoom, passInner: true},
			{name: "BothCommit", visible: true},
			{name: "OuterErrorRollsBackInner", outer: errBoom},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := setup(t, h)
				tr := e.transactor()
				outerMsg, innerMsg := newMsg("orders", ""), newMsg("orders", "")
				err := tr.InTx(e.ctx, func(ctx context.Context) error {
					e.save(ctx, outerMsg)
					err := tr.InTx(ctx, func(ctx context.Context) error {
						e.save(ctx, innerMsg)
						return tc.inner
					})
					if !errors.Is(err, tc.inner) {
						t.Errorf("nested InTx = %v, want %v", err, tc.inner)
					}
					if tc.passInner {
						return err
					}
					return tc.outer
				})
				want := tc.outer
				if tc.passInner {
					want = tc.inner
				}
				if !errors.Is(err, want) {
					t.Fatalf("InTx = %v, want %v", err, want)
				}
				var wantIDs []string
				if tc.visible {
					wantIDs = []string{outerMsg.ID(), innerMsg.ID()}
				}
				equalIDs(t, "after InTx", e.visible(), wantIDs)
			})
		}
	})

	t.Run("UncommittedSavesAreInvisible", func(t *testing.T) {
		e := setup(t, h)
		tr := e.transactor()
		m := newMsg("orders", "")
		saved, checked := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- tr.InTx(e.ctx, func(ctx context.Context) error {
				if err := e.st.Outbox.Save(ctx, m); err != nil {
					return err
				}
				close(saved)
				select {
				case <-checked:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
		select {
		case <-saved:
		case err := <-done:
			t.Fatalf("InTx ended before the check: %v", err)
		}
		// Look from another goroutine. A store that serialises writers (as
		// SQLite does) may make the look wait for the commit: then it is
		// given up after a grace period and counted only if it ended before
		// the commit.
		type look struct {
			found, claimed []string
			err            error
		}
		looked := make(chan look, 1)
		go func() {
			var l look
			msgs, err := e.st.Outbox.FindUnpublished(e.ctx, 10)
			l.found, l.err = msgIDs(msgs), err
			if c, ok := e.st.Outbox.(txm.Claimer); ok && err == nil {
				got, err := c.Claim(e.ctx, 10, longLease)
				l.claimed, l.err = claimedIDs(got), err
			}
			looked <- l
		}()
		grace := time.NewTimer(5 * time.Second)
		defer grace.Stop()
		var (
			l      look
			inTime bool
		)
		select {
		case l = <-looked:
			inTime = true
		case <-grace.C:
		}
		close(checked)
		if err := <-done; err != nil {
			t.Fatalf("InTx = %v", err)
		}
		if !inTime {
			t.Log("reads waited for the open transaction; visibility is checked after the commit only")
			l = <-looked
			if l.err != nil {
				t.Fatalf("reading after the commit: %v", l.err)
			}
			// The late look may have leased the message itself.
			seen := append(append(l.found, l.claimed...), e.visible()...)
			if !slices.Contains(seen, m.ID()) {
				t.Fatalf("after commit the message is neither found, claimed nor visible: %v", seen)
			}
			return
		}
		if l.err != nil {
			t.Fatalf("reading during the transaction: %v", l.err)
		}
		equalIDs(t, "FindUnpublished during the transaction", l.found, nil)
		equalIDs(t, "Claim during the transaction", l.claimed, nil)
		equalIDs(t, "after commit", e.visible(), []string{m.ID()})
	})

	t.Run("CancelledContext", func(t *testing.T) {
		e := setup(t, h)
		tr := e.transactor()
		ctx, cancel := context.WithCancel(e.ctx)
		err := tr.InTx(ctx, func(ctx context.Context) error {
			e.save(ctx, newMsg("orders", ""))
			cancel()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("InTx = %v, want context.Canceled", err)
		}
		equalIDs(t, "after a cancelled transaction", e.visible(), nil)
	})
}
