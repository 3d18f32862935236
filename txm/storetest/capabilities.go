package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

func testBatchSaver(t *testing.T, h Harness) {
	t.Run("SaveManySkipsDuplicates", func(t *testing.T) {
		e := setup(t, h)
		b, ok := e.st.Outbox.(txm.BatchSaver)
		if !ok {
			t.Skip("store does not implement txm.BatchSaver")
		}
		first := seq(3, "orders", "k")
		if n, err := b.SaveMany(e.ctx, first); err != nil || n != 3 {
			t.Fatalf("SaveMany(3 new) = %d, %v, want 3, nil", n, err)
		}
		d, f := newMsg("orders", "k"), newMsg("orders", "")
		second := []async.Message{first[1], d, d, f}
		if n, err := b.SaveMany(e.ctx, second); err != nil || n != 2 {
			t.Fatalf("SaveMany(1 stored, 1 new twice, 1 new) = %d, %v, want 2, nil", n, err)
		}
		if n, err := b.SaveMany(e.ctx, nil); err != nil || n != 0 {
			t.Fatalf("SaveMany(none) = %d, %v, want 0, nil", n, err)
		}
		want := cat(msgIDs(first), []string{d.ID(), f.ID()})
		got := e.find(10)
		equalIDs(t, "FindUnpublished after SaveMany", msgIDs(got), want)
		assertMessage(t, got[3], d)
		if c, ok := e.st.Outbox.(txm.Claimer); ok {
			e.markPublished(want...)
			third := seq(4, "orders", "k")
			if _, err := b.SaveMany(e.ctx, third); err != nil {
				t.Fatalf("SaveMany: %v", err)
			}
			equalIDs(t, "Claim after SaveMany", claimedIDs(e.claim(c, 10, longLease)), msgIDs(third))
		}
	})

	t.Run("SaveManyInTransaction", func(t *testing.T) {
		e := setup(t, h)
		b, ok := e.st.Outbox.(txm.BatchSaver)
		if !ok {
			t.Skip("store does not implement txm.BatchSaver")
		}
		tr := e.transactor()
		msgs := seq(3, "orders", "")
		err := tr.InTx(e.ctx, func(ctx context.Context) error {
			if n, err := b.SaveMany(ctx, msgs); err != nil || n != 3 {
				t.Errorf("SaveMany in InTx = %d, %v, want 3, nil", n, err)
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("InTx = %v, want the error of fn", err)
		}
		equalIDs(t, "after rollback", e.visible(), nil)
		err = tr.InTx(e.ctx, func(ctx context.Context) error {
			e.save(ctx, msgs[0])
			if n, err := b.SaveMany(ctx, msgs); err != nil || n != 2 {
				t.Errorf("SaveMany in InTx after a Save = %d, %v, want 2, nil", n, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("InTx = %v", err)
		}
		equalIDs(t, "after commit", e.visible(), msgIDs(msgs))
	})

	// Large batches: a store may write them another way (PostgreSQL's pgx
	// store copies them), which must skip duplicates all the same, inside
	// and outside a transaction, and leave the transaction usable.
	t.Run("SaveManyLargeBatches", func(t *testing.T) {
		e := setup(t, h)
		b, ok := e.st.Outbox.(txm.BatchSaver)
		if !ok {
			t.Skip("store does not implement txm.BatchSaver")
		}
		const n = 200
		first := seq(n, "orders", "k")
		if got, err := b.SaveMany(e.ctx, first); err != nil || got != n {
			t.Fatalf("SaveMany(%d new) = %d, %v, want %d, nil", n, got, err, n)
		}
		// One stored ID in the middle of new ones, and one new ID twice.
		second := seq(n, "orders", "")
		second[n/2] = first[7]
		second[n-1] = second[3]
		if got, err := b.SaveMany(e.ctx, second); err != nil || got != n-2 {
			t.Fatalf("SaveMany(%d with 1 stored, 1 twice) = %d, %v, want %d, nil", n, got, err, n-2)
		}
		want := cat(msgIDs(first), msgIDs(second[:n/2]), msgIDs(second[n/2+1:n-1]))
		got := e.find(3 * n)
		equalIDs(t, "FindUnpublished after the large batches", msgIDs(got), want)
		assertMessage(t, got[n+5], second[5])

		third := seq(n, "payments", "p")
		third[0] = first[0]
		late := newMsg("payments", "p")
		err := e.transactor().InTx(e.ctx, func(ctx context.Context) error {
			if got, err := b.SaveMany(ctx, third); err != nil || got != n-1 {
				t.Errorf("SaveMany in InTx (%d with 1 stored) = %d, %v, want %d, nil", n, got, err, n-1)
			}
			if got, err := b.SaveMany(ctx, third[1:]); err != nil || got != 0 {
				t.Errorf("SaveMany in InTx of the same batch again = %d, %v, want 0, nil", got, err)
			}
			e.save(ctx, late) // the transaction is still usable
			return nil
		})
		if err != nil {
			t.Fatalf("InTx = %v", err)
		}
		// The first two batches are leased by FindUnpublished above.
		equalIDs(t, "after the InTx commit", e.visible(), cat(msgIDs(third[1:]), []string{late.ID()}))
	})

	t.Run("SaveManyWithCancelledContext", func(t *testing.T) {
		e := setup(t, h)
		b, ok := e.st.Outbox.(txm.BatchSaver)
		if !ok {
			t.Skip("store does not implement txm.BatchSaver")
		}
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		if _, err := b.SaveMany(ctx, seq(2, "orders", "")); !errors.Is(err, context.Canceled) {
			t.Fatalf("SaveMany with a cancelled context = %v, want context.Canceled", err)
		}
		equalIDs(t, "after a cancelled SaveMany", e.visible(), nil)
	})
}

func testStats(t *testing.T, h Harness) {
	e := setup(t, h)
	s, ok := e.st.Outbox.(txm.StatsReporter)
	if !ok {
		t.Skip("store does not implement txm.StatsReporter")
	}
	stats := func() txm.OutboxStats {
		t.Helper()
		st, err := s.Stats(e.ctx)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		return st
	}
	if st := stats(); st.Pending != 0 || st.Dead != 0 || !st.OldestPending.IsZero() || len(st.ByTopic) != 0 {
		t.Fatalf("Stats of an empty store = %+v, want zero", st)
	}

	before := time.Now()
	a := seq(3, "a", "")
	e.save(e.ctx, a...)
	after := time.Now()
	if e.fake() {
		e.st.Advance(time.Minute)
	}
	b := seq(2, "b", "")
	e.save(e.ctx, b...)

	st := stats()
	if st.Pending != 5 || st.Dead != 0 {
		t.Errorf("Stats Pending, Dead = %d, %d, want 5, 0", st.Pending, st.Dead)
	}
	if st.OldestPending.Before(before.Add(-time.Second)) || st.OldestPending.After(after.Add(time.Second)) {
		t.Errorf("Stats OldestPending = %v, want within a second of the first save (%v .. %v)", st.OldestPending, before, after)
	}
	ta, tb := st.ByTopic["a"], st.ByTopic["b"]
	if ta.Pending != 3 || tb.Pending != 2 {
		t.Errorf("ByTopic Pending a, b = %d, %d, want 3, 2", ta.Pending, tb.Pending)
	}
	if !ta.OldestPending.Equal(st.OldestPending) {
		t.Errorf("ByTopic[a].OldestPending = %v, want the overall oldest %v", ta.OldestPending, st.OldestPending)
	}
	if tb.OldestPending.Before(ta.OldestPending) {
		t.Errorf("ByTopic[b].OldestPending = %v, before a's %v which was saved first", tb.OldestPending, ta.OldestPending)
	}
	if e.fake() && tb.OldestPending.Sub(ta.OldestPending) < 59*time.Second {
		t.Errorf("ByTopic[b].OldestPending = %v, want a minute after a's %v", tb.OldestPending, ta.OldestPending)
	}

	// Publish all of b and one of a; kill another of a when the store can.
	e.markPublished(cat(msgIDs(b), []string{a[0].ID()})...)
	wantPending, wantDead := int64(2), int64(0)
	if d, ok := e.st.Outbox.(txm.DeadLetterStore); ok {
		if err := d.MarkDead(e.ctx, a[1].ID(), "dead"); err != nil {
			t.Fatalf("MarkDead: %v", err)
		}
		wantPending, wantDead = 1, 1
	}
	st = stats()
	if st.Pending != wantPending || st.Dead != wantDead {
		t.Errorf("Stats Pending, Dead = %d, %d, want %d, %d", st.Pending, st.Dead, wantPending, wantDead)
	}
	if ta := st.ByTopic["a"]; ta.Pending != wantPending || ta.Dead != wantDead {
		t.Errorf("ByTopic[a] Pending, Dead = %d, %d, want %d, %d", ta.Pending, ta.Dead, wantPending, wantDead)
	}
	if tb := st.ByTopic["b"]; tb.Pending != 0 || tb.Dead != 0 || !tb.OldestPending.IsZero() {
		t.Errorf("ByTopic[b] = %+v after publishing all of b, want zero", tb)
	}
	if st.OldestPending.Before(before.Add(-time.Second)) || st.OldestPending.After(after.Add(time.Second)) {
		t.Errorf("Stats OldestPending = %v, want within a second of the save of a (%v .. %v)", st.OldestPending, before, after)
	}

	e.markPublished(msgIDs(a)...)
	st = stats()
	if st.Pending != 0 || !st.OldestPending.IsZero() {
		t.Errorf("Stats after publishing all pending = %+v, want Pending 0 and no OldestPending", st.TopicStats)
	}
}

func testPurger(t *testing.T, h Harness) {
	e := setup(t, h)
	p, ok := e.st.Outbox.(txm.Purger)
	if !ok {
		t.Skip("store does not implement txm.Purger")
	}
	purge := func(olderThan time.Duration, limit int) int {
		t.Helper()
		n, err := p.Purge(e.ctx, olderThan, limit)
		if err != nil {
			t.Fatalf("Purge(%v, %d): %v", olderThan, limit, err)
		}
		if n > limit {
			t.Fatalf("Purge(%v, %d) = %d, more than the limit", olderThan, limit, n)
		}
		return n
	}
	msgs := seq(7, "orders", "")
	e.save(e.ctx, msgs...)
	published, pending := msgs[:5], msgs[5:]
	var dead async.Message
	if d, ok := e.st.Outbox.(txm.DeadLetterStore); ok {
		dead, pending = pending[0], pending[1:]
		if err := d.MarkDead(e.ctx, dead.ID(), "dead"); err != nil {
			t.Fatalf("MarkDead: %v", err)
		}
	}
	start := time.Now()
	e.markPublished(msgIDs(published)...)
	if n := purge(time.Hour, 10); n != 0 {
		t.Fatalf("Purge(1h) right after publishing = %d, want 0", n)
	}
	if h.DeletesPublished {
		if n := purge(0, 10); n != 0 {
			t.Fatalf("Purge(0) of a store that deletes published messages = %d, want 0", n)
		}
		equalIDs(t, "pending after Purge", msgIDs(e.find(10)), msgIDs(pending))
		return
	}

	age := time.Hour
	if e.fake() {
		e.st.Advance(2 * time.Hour)
	} else {
		age = e.lease / 4
		e.pass(start, age+time.Millisecond)
	}
	total := 0
	e.poll("the published messages to be purged", 20*e.lease+10*time.Second, func() bool {
		total += purge(age, 2)
		return total >= len(published)
	})
	if total != len(published) {
		t.Fatalf("Purge removed %d messages, want %d", total, len(published))
	}
	if n := purge(age, 10); n != 0 {
		t.Errorf("Purge after draining = %d, want 0", n)
	}
	equalIDs(t, "pending after Purge", msgIDs(e.find(10)), msgIDs(pending))
	if dead != nil {
		got, err := e.st.Outbox.(txm.DeadLetterStore).DeadLetters(e.ctx, txm.DeadLetterFilter{})
		if err != nil {
			t.Fatalf("DeadLetters: %v", err)
		}
		equalIDs(t, "dead letters after Purge", deadIDs(got), []string{dead.ID()})
	}
}

func testWaker(t *testing.T, h Harness) {
	t.Run("CommittedSaveWakes", func(t *testing.T) {
		e := setup(t, h)
		w, ok := e.st.Outbox.(txm.Waker)
		if !ok {
			t.Skip("store does not implement txm.Waker")
		}
		ch := w.Wakeups()
		if ch == nil {
			t.Fatal("Wakeups returned a nil channel")
		}
		drain(ch)
		e.save(e.ctx, newMsg("orders", ""))
		awaitWake(t, ch, "a Save")

		tr, ok := e.st.Outbox.(txm.Transactor)
		if !ok {
			return
		}
		drain(ch)
		if err := tr.InTx(e.ctx, func(ctx context.Context) error {
			e.save(ctx, newMsg("orders", ""))
			return nil
		}); err != nil {
			t.Fatalf("InTx: %v", err)
		}
		awaitWake(t, ch, "a committed InTx")
	})

	t.Run("SaversNeverBlock", func(t *testing.T) {
		e := setup(t, h)
		w, ok := e.st.Outbox.(txm.Waker)
		if !ok {
			t.Skip("store does not implement txm.Waker")
		}
		ch := w.Wakeups()
		// Nobody receives: saves must still go through.
		e.save(e.ctx, seq(20, "orders", "")...)
		awaitWake(t, ch, "saves nobody listened to")
	})
}

// drain empties a wake-up channel without blocking.
func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func awaitWake(t *testing.T, ch <-chan struct{}, after string) {
	t.Helper()
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("no wake-up within 1s after %s", after)
	}
}
