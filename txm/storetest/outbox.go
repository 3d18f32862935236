package storetest

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// RunOutbox runs the outbox half of the suite: the three methods of
// [txm.OutboxStore] and every optional capability, skipping those the
// outbox lacks.
func RunOutbox(t *testing.T, h Harness) {
	t.Helper()
	t.Run("Outbox", func(t *testing.T) {
		t.Run("Seed", func(t *testing.T) { testSeed(t, h) })
		t.Run("Transactor", func(t *testing.T) { testTransactor(t, h) })
		t.Run("TxReporter", func(t *testing.T) { testTxReporter(t, h) })
		t.Run("Claimer", func(t *testing.T) { testClaimer(t, h) })
		t.Run("DeadLetterStore", func(t *testing.T) { testDeadLetters(t, h) })
		t.Run("BatchSaver", func(t *testing.T) { testBatchSaver(t, h) })
		t.Run("StatsReporter", func(t *testing.T) { testStats(t, h) })
		t.Run("Purger", func(t *testing.T) { testPurger(t, h) })
		t.Run("Waker", func(t *testing.T) { testWaker(t, h) })
		t.Run("Scheduling", func(t *testing.T) { testScheduling(t, h) })
	})
}

func testSeed(t *testing.T, h Harness) {
	t.Run("SaveKeepsEveryField", func(t *testing.T) {
		e := setup(t, h)
		sentAt := time.Date(2024, 5, 17, 10, 11, 12, 345_678_901, time.UTC)
		full := async.NewMessage("orders.placed", "OrderPlaced", []byte("\x00\x01binary\xff payload"),
			async.WithID(async.NewID()),
			async.WithSentAt(sentAt),
			async.WithMetadata(async.Metadata{
				async.MetaContentType:  "application/x-msgpack",
				async.MetaPartitionKey: "order-42",
				"x-custom":             "custom value",
			}))
		bare := async.NewMessage("orders.cancelled", "OrderCancelled", nil, async.WithID(async.NewID()))
		e.save(e.ctx, full, bare)

		got := e.find(10)
		equalIDs(t, "FindUnpublished", msgIDs(got), []string{full.ID(), bare.ID()})
		for i, want := range []async.Message{full, bare} {
			assertMessage(t, got[i], want)
		}
	})

	t.Run("SaveCopiesTheMessage", func(t *testing.T) {
		e := setup(t, h)
		data := []byte("original")
		md := async.Metadata{async.MetaContentType: "text/plain"}
		m := async.NewMessage("t", "T", data, async.WithMetadata(md))
		want := async.Clone(m)
		e.save(e.ctx, m)
		copy(data, "mutated!")
		m.Metadata()[async.MetaContentType] = "mutated"
		m.Metadata()["added"] = "after save"

		got := e.find(10)
		if len(got) != 1 {
			t.Fatalf("FindUnpublished returned %d messages, want 1", len(got))
		}
		assertMessage(t, got[0], want)
		if v := got[0].Metadata().GetString("added"); v != "" {
			t.Errorf("metadata added after Save is stored: %q", v)
		}
	})

	t.Run("FindUnpublishedHonoursLimitAndOrder", func(t *testing.T) {
		e := setup(t, h)
		msgs := seq(5, "orders", "")
		e.save(e.ctx, msgs...)
		ids := msgIDs(msgs)

		first := e.find(3)
		equalIDs(t, "FindUnpublished(3)", msgIDs(first), ids[:3])
		e.markPublished(msgIDs(first)...)
		equalIDs(t, "FindUnpublished after MarkPublished", msgIDs(e.find(10)), ids[3:])
		e.markPublished(ids[3:]...)
		equalIDs(t, "FindUnpublished after publishing all", msgIDs(e.find(10)), nil)
	})

	t.Run("MarkPublishedUnknownIDs", func(t *testing.T) {
		e := setup(t, h)
		m := newMsg("orders", "")
		e.save(e.ctx, m)
		e.markPublished(async.NewID(), async.NewID())
		e.markPublished()
		equalIDs(t, "FindUnpublished", msgIDs(e.find(10)), []string{m.ID()})
		e.markPublished(m.ID())
		e.markPublished(m.ID()) // again
		equalIDs(t, "FindUnpublished after MarkPublished", msgIDs(e.find(10)), nil)
	})

	t.Run("DuplicateSave", func(t *testing.T) {
		e := setup(t, h)
		first := newMsg("orders", "k")
		e.save(e.ctx, first)
		second := async.NewMessage("other", "Other", []byte("second"), async.WithID(first.ID()))
		err := e.st.Outbox.Save(e.ctx, second)
		if !errors.Is(err, txm.ErrDuplicateMessage("")) {
			t.Fatalf("second Save of %s = %v, want an error matching txm.ErrDuplicateMessage", first.ID(), err)
		}
		var dup txm.ErrDuplicateMessage
		if errors.As(err, &dup) && string(dup) != first.ID() {
			t.Errorf("ErrDuplicateMessage names %q, want %q", string(dup), first.ID())
		}
		got := e.find(10)
		if len(got) != 1 {
			t.Fatalf("FindUnpublished returned %d messages, want 1", len(got))
		}
		assertMessage(t, got[0], first)
	})

	t.Run("SaveWithCancelledContext", func(t *testing.T) {
		e := setup(t, h)
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		if err := e.st.Outbox.Save(ctx, newMsg("orders", "")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Save with a cancelled context = %v, want an error matching context.Canceled", err)
		}
		equalIDs(t, "FindUnpublished", msgIDs(e.find(10)), nil)
	})

	t.Run("ConcurrentSavers", func(t *testing.T) {
		e := setup(t, h)
		const savers, each = 8, 50
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			want []string
			errs []error
		)
		for range savers {
			wg.Go(func() {
				for range each {
					m := newMsg("orders", "")
					if err := e.st.Outbox.Save(e.ctx, m); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					mu.Lock()
					want = append(want, m.ID())
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent Save: %v", err)
		}
		sameIDs(t, "FindUnpublished", msgIDs(e.find(savers*each*2)), want)
	})
}

// assertMessage compares a stored message with the one saved: every field,
// SentAt to the millisecond, metadata by string value.
func assertMessage(t *testing.T, got, want async.Message) {
	t.Helper()
	if got == nil {
		t.Fatalf("message %s is nil", want.ID())
	}
	if got.ID() != want.ID() {
		t.Errorf("ID = %q, want %q", got.ID(), want.ID())
	}
	if got.Subject() != want.Subject() {
		t.Errorf("%s: Subject = %q, want %q", want.ID(), got.Subject(), want.Subject())
	}
	if got.MessageName() != want.MessageName() {
		t.Errorf("%s: MessageName = %q, want %q", want.ID(), got.MessageName(), want.MessageName())
	}
	if d := got.SentAt().Sub(want.SentAt()); d <= -time.Millisecond || d >= time.Millisecond {
		t.Errorf("%s: SentAt = %v, want %v (to the millisecond)", want.ID(), got.SentAt(), want.SentAt())
	}
	if !bytes.Equal(got.Data(), want.Data()) {
		t.Errorf("%s: Data = %q, want %q", want.ID(), got.Data(), want.Data())
	}
	if gs, ws := got.Metadata().Strings(), want.Metadata().Strings(); !maps.Equal(gs, ws) {
		t.Errorf("%s: Metadata = %v, want %v", want.ID(), gs, ws)
	}
}
