package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// timeSlack is how far a time read back from a store may be from the one
// written: databases keep microseconds.
const timeSlack = time.Millisecond

// now returns the store's time: its movable clock's, or the machine's.
func (e *env) now() time.Time {
	if e.st.Now != nil {
		return e.st.Now()
	}
	return time.Now()
}

// newScheduled returns a message of topic with partition key key ("" for
// none) to be delivered at at, and expiring at exp unless exp is zero.
func newScheduled(topic, key string, at, exp time.Time) async.Message {
	m := newMsg(topic, key)
	m.Metadata()[async.MetaDeliverAt] = async.FormatTime(at)
	if !exp.IsZero() {
		m.Metadata()[async.MetaExpiresAt] = async.FormatTime(exp)
	}
	return m
}

// near reports whether got is within timeSlack of want.
func near(got, want time.Time) bool {
	d := got.Sub(want)
	return d > -timeSlack && d < timeSlack
}

// scheduleDelay is how far ahead the suite schedules a message it waits
// for: on a fake clock an hour, on a real one the harness's lease.
func (e *env) scheduleDelay() time.Duration {
	if e.fake() {
		return time.Hour
	}
	return e.lease
}

func (e *env) scheduler() txm.Scheduler {
	e.t.Helper()
	s, ok := e.st.Outbox.(txm.Scheduler)
	if !ok {
		e.t.Skip("store does not implement txm.Scheduler")
	}
	return s
}

// testScheduling runs on stores that implement [txm.Scheduler]: a store
// that keeps scheduled messages does.
func testScheduling(t *testing.T, h Harness) {
	if _, ok := h.New(t).Outbox.(txm.Scheduler); !ok {
		t.Skip("store does not implement txm.Scheduler (scheduled messages)")
	}
	t.Run("NotClaimedBeforeItsTime", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		d := e.scheduleDelay()
		start := time.Now()
		at := e.now().Add(d)
		exp := at.Add(time.Hour)
		later := newScheduled("reminders", "", at, exp)
		now := newMsg("reminders", "")
		e.save(e.ctx, later, now)
		got := claimedIDs(e.claim(c, 10, longLease))
		if e.before(start, d) {
			equalIDs(t, "Claim before the delivery time", got, []string{now.ID()})
		}
		if dr, ok := e.st.Outbox.(txm.DueReporter); ok && e.before(start, d) {
			in, ok, err := dr.NextDue(e.ctx)
			if err != nil {
				t.Fatalf("NextDue: %v", err)
			}
			if !ok || in <= 0 || in > d+timeSlack {
				t.Errorf("NextDue = %v, %v; want within (0, %v]", in, ok, d)
			}
		}
		if len(got) > 1 {
			return // the machine was too slow: the delivery time passed
		}
		e.markPublished(now.ID())
		e.pass(start, d)
		claimed := e.claimAfter(c, 10, longLease, "the delivery time")
		equalIDs(t, "Claim after the delivery time", claimedIDs(claimed), []string{later.ID()})
		assertMessage(t, claimed[0].Message, later)
		if dr, ok := e.st.Outbox.(txm.DueReporter); ok {
			if in, ok, err := dr.NextDue(e.ctx); err != nil || ok {
				t.Errorf("NextDue with nothing waiting = %v, %v, %v; want none", in, ok, err)
			}
		}
	})

	t.Run("OutsideItsKeysSequence", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		now := e.now()
		waiting := newScheduled("orders", "k", now.Add(time.Hour), time.Time{})
		head := newMsg("orders", "k")
		due := newScheduled("orders", "k", now.Add(-time.Second), time.Time{})
		next := newMsg("orders", "k")
		e.save(e.ctx, waiting, head, due, next)
		// The waiting message does not park its key; the due one does not
		// wait behind the key's head, which a long lease keeps.
		got := claimedIDs(e.claim(c, 1, longLease))
		equalIDs(t, "first Claim", got, []string{head.ID()})
		equalIDs(t, "Claim while the key's head is leased", claimedIDs(e.claim(c, 10, longLease)), []string{due.ID()})
		e.markPublished(head.ID())
		equalIDs(t, "Claim after the head is published", claimedIDs(e.claim(c, 10, longLease)), []string{next.ID()})
		// A scheduled message that died parks nothing.
		if d, ok := e.st.Outbox.(txm.DeadLetterStore); ok {
			if err := d.MarkDead(e.ctx, due.ID(), "dead"); err != nil {
				t.Fatalf("MarkDead: %v", err)
			}
			e.markPublished(next.ID())
			after := newMsg("orders", "k")
			e.save(e.ctx, after)
			equalIDs(t, "Claim after a dead scheduled message", claimedIDs(e.claim(c, 10, longLease)), []string{after.ID()})
		}
	})

	t.Run("Stats", func(t *testing.T) {
		e := setup(t, h)
		s, ok := e.st.Outbox.(txm.StatsReporter)
		if !ok {
			t.Skip("store does not implement txm.StatsReporter")
		}
		now := e.now()
		at1, at2 := now.Add(time.Hour), now.Add(2*time.Hour)
		dueAt := now.Add(-time.Minute)
		e.save(e.ctx, newScheduled("a", "", at2, time.Time{}), newScheduled("a", "", at1, time.Time{}),
			newScheduled("b", "", at2, time.Time{}), newScheduled("b", "", dueAt, time.Time{}))
		st, err := s.Stats(e.ctx)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st.Pending != 1 || st.Scheduled != 3 || !near(st.NextDue, at1) {
			t.Errorf("Stats = %+v, want 1 pending (the due one), 3 scheduled, next due %v", st.TopicStats, at1)
		}
		// A message scheduled in the past became due when it was saved.
		if st.OldestPending.Before(now.Add(-time.Second)) || st.OldestPending.After(e.now().Add(time.Second)) {
			t.Errorf("OldestPending = %v, want the save time of the message scheduled in the past (%v)", st.OldestPending, now)
		}
		ta, tb := st.ByTopic["a"], st.ByTopic["b"]
		if ta.Pending != 0 || ta.Scheduled != 2 || !ta.OldestPending.IsZero() || !near(ta.NextDue, at1) {
			t.Errorf("ByTopic[a] = %+v, want 2 scheduled due first at %v, nothing pending", ta, at1)
		}
		if tb.Pending != 1 || tb.Scheduled != 1 || !near(tb.NextDue, at2) {
			t.Errorf("ByTopic[b] = %+v, want 1 pending, 1 scheduled due at %v", tb, at2)
		}
		if !e.fake() {
			return
		}
		// Once its time has come, a scheduled message is pending, due since
		// its delivery time.
		e.st.Advance(90 * time.Minute)
		if st, err = s.Stats(e.ctx); err != nil {
			t.Fatalf("Stats: %v", err)
		}
		ta = st.ByTopic["a"]
		if ta.Pending != 1 || ta.Scheduled != 1 || !near(ta.OldestPending, at1) || !near(ta.NextDue, at2) {
			t.Errorf("ByTopic[a] after its first delivery time = %+v, want 1 pending since %v, 1 scheduled due at %v", ta, at1, at2)
		}
	})

	t.Run("NextDue", func(t *testing.T) {
		e := setup(t, h)
		dr, ok := e.st.Outbox.(txm.DueReporter)
		if !ok {
			t.Skip("store does not implement txm.DueReporter")
		}
		if in, ok, err := dr.NextDue(e.ctx); err != nil || ok {
			t.Fatalf("NextDue of an empty store = %v, %v, %v; want none", in, ok, err)
		}
		e.save(e.ctx, newMsg("orders", ""), newScheduled("orders", "", e.now().Add(-time.Second), time.Time{}))
		if in, ok, err := dr.NextDue(e.ctx); err != nil || ok {
			t.Fatalf("NextDue with only due messages = %v, %v, %v; want none", in, ok, err)
		}
		e.save(e.ctx, newScheduled("orders", "", e.now().Add(2*time.Hour), time.Time{}))
		in, ok, err := dr.NextDue(e.ctx)
		if err != nil || !ok || in > 2*time.Hour || in < 2*time.Hour-time.Minute {
			t.Fatalf("NextDue = %v, %v, %v; want about 2h", in, ok, err)
		}
		// A retry counts too.
		c := e.claimer()
		got := e.claim(c, 1, longLease)
		if len(got) != 1 {
			t.Fatalf("Claim returned %d messages, want 1", len(got))
		}
		if err := c.MarkFailed(e.ctx, got[0].Message.ID(), time.Hour, "failed"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		in, ok, err = dr.NextDue(e.ctx)
		if err != nil || !ok || in > time.Hour || in < time.Hour-time.Minute {
			t.Fatalf("NextDue with a retry in an hour = %v, %v, %v; want about 1h", in, ok, err)
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		e := setup(t, h)
		s := e.scheduler()
		tr := e.transactor()
		c := e.claimer()
		now := e.now()
		m := newScheduled("reminders", "", now.Add(-time.Second), time.Time{})
		e.save(e.ctx, m)
		errRollback := errors.New("roll back")
		err := tr.InTx(e.ctx, func(ctx context.Context) error {
			if err := s.Cancel(ctx, m.ID()); err != nil {
				t.Fatalf("Cancel in a transaction: %v", err)
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("InTx = %v, want the function's error", err)
		}
		// Rolled back: the message is still there, and a cancel in a
		// transaction that commits removes it. Until the commit, claims do
		// not take it.
		claimed := make(chan []txm.Claimed, 1)
		seen := false
		err = tr.InTx(e.ctx, func(ctx context.Context) error {
			if err := s.Cancel(ctx, m.ID()); err != nil {
				return err
			}
			go func() {
				got, err := c.Claim(e.ctx, 10, longLease)
				if err != nil {
					t.Errorf("Claim during a cancel: %v", err)
				}
				claimed <- got
			}()
			select {
			case got := <-claimed:
				seen = true
				equalIDs(t, "Claim during an uncommitted cancel", claimedIDs(got), nil)
			case <-time.After(time.Second): // a store that locks the whole database: checked after commit
			}
			return nil
		})
		if err != nil {
			t.Fatalf("cancel after a rolled-back cancel: %v", err)
		}
		if !seen {
			equalIDs(t, "Claim during an uncommitted cancel", claimedIDs(<-claimed), nil)
		}
		equalIDs(t, "Claim after a cancel", claimedIDs(e.claim(c, 10, longLease)), nil)
		if err := s.Cancel(e.ctx, m.ID()); !errors.Is(err, txm.ErrNotScheduled) {
			t.Errorf("Cancel of a cancelled message = %v, want ErrNotScheduled", err)
		}
		// Its ID can be saved again.
		e.save(e.ctx, m)
		equalIDs(t, "Claim after saving a cancelled ID again", claimedIDs(e.claim(c, 10, longLease)), []string{m.ID()})

		// Saved and cancelled in one transaction: nothing commits.
		m2 := newScheduled("reminders", "", now.Add(-time.Second), time.Time{})
		if err := tr.InTx(e.ctx, func(ctx context.Context) error {
			e.save(ctx, m2)
			return s.Cancel(ctx, m2.ID())
		}); err != nil {
			t.Fatalf("save and cancel in one transaction: %v", err)
		}
		equalIDs(t, "Claim after a save cancelled in its transaction", claimedIDs(e.claim(c, 10, longLease)), nil)
	})

	t.Run("CancelRefusesWhatIsNotWaiting", func(t *testing.T) {
		e := setup(t, h)
		s := e.scheduler()
		c := e.claimer()
		now := e.now()
		plain := newMsg("orders", "")
		claimed := newScheduled("orders", "", now.Add(-time.Second), time.Time{})
		e.save(e.ctx, plain, claimed)
		e.claim(c, 10, longLease) // both: the scheduled one is due
		published := newScheduled("orders", "", now.Add(-time.Second), time.Time{})
		e.save(e.ctx, published)
		e.claim(c, 10, longLease)
		e.markPublished(published.ID())
		for what, id := range map[string]string{
			"an unscheduled message": plain.ID(),
			"a claimed message":      claimed.ID(),
			"a published message":    published.ID(),
			"an unknown ID":          async.NewID(),
		} {
			if err := s.Cancel(e.ctx, id); !errors.Is(err, txm.ErrNotScheduled) {
				t.Errorf("Cancel of %s = %v, want ErrNotScheduled", what, err)
			}
			if err := s.Reschedule(e.ctx, id, now); !errors.Is(err, txm.ErrNotScheduled) {
				t.Errorf("Reschedule of %s = %v, want ErrNotScheduled", what, err)
			}
		}
	})

	t.Run("Reschedule", func(t *testing.T) {
		e := setup(t, h)
		s := e.scheduler()
		tr := e.transactor()
		c := e.claimer()
		now := e.now()
		exp := now.Add(3 * time.Hour)
		m := newScheduled("reminders", "", now.Add(time.Hour), exp)
		e.save(e.ctx, m)
		earlier := now.Add(-time.Second)
		errRollback := errors.New("roll back")
		if err := tr.InTx(e.ctx, func(ctx context.Context) error {
			if err := s.Reschedule(ctx, m.ID(), earlier); err != nil {
				t.Fatalf("Reschedule in a transaction: %v", err)
			}
			return errRollback
		}); !errors.Is(err, errRollback) {
			t.Fatalf("InTx = %v, want the function's error", err)
		}
		equalIDs(t, "Claim after a rolled-back reschedule", claimedIDs(e.claim(c, 10, longLease)), nil)
		for _, bad := range []time.Time{exp, exp.Add(time.Second)} {
			if err := s.Reschedule(e.ctx, m.ID(), bad); !errors.Is(err, txm.ErrInvalidMetadata) {
				t.Errorf("Reschedule to %v, not before the expiry %v: %v, want ErrInvalidMetadata", bad, exp, err)
			}
		}
		if err := tr.InTx(e.ctx, func(ctx context.Context) error { return s.Reschedule(ctx, m.ID(), earlier) }); err != nil {
			t.Fatalf("Reschedule: %v", err)
		}
		got := e.claim(c, 10, longLease)
		equalIDs(t, "Claim after rescheduling to the past", claimedIDs(got), []string{m.ID()})
		if at, ok := got[0].Message.Metadata().DeliverAt(); !ok || !near(at, earlier) {
			t.Errorf("claimed message's %s = %v, want the new time %v", async.MetaDeliverAt, at, earlier)
		}
		if err := s.Reschedule(e.ctx, m.ID(), now.Add(time.Hour)); !errors.Is(err, txm.ErrNotScheduled) {
			t.Errorf("Reschedule of a claimed message = %v, want ErrNotScheduled", err)
		}

		// Moved later: a due message waits again.
		m2 := newScheduled("reminders", "", now.Add(-time.Second), time.Time{})
		e.save(e.ctx, m2)
		if err := s.Reschedule(e.ctx, m2.ID(), now.Add(time.Hour)); err != nil {
			t.Fatalf("Reschedule later: %v", err)
		}
		equalIDs(t, "Claim after rescheduling later", claimedIDs(e.claim(c, 10, longLease)), nil)
		if st, ok := e.st.Outbox.(txm.StatsReporter); ok {
			stats, err := st.Stats(e.ctx)
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if stats.Scheduled != 1 || !near(stats.NextDue, now.Add(time.Hour)) {
				t.Errorf("Stats after rescheduling = %+v, want 1 scheduled due at %v", stats.TopicStats, now.Add(time.Hour))
			}
		}
	})
}
