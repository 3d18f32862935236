package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// schedOp is a cancel (at nil) or a reschedule of a committed scheduled
// message, applied when its transaction commits.
type schedOp struct {
	e  *entry
	at *time.Time
}

// Cancel deletes the scheduled message with the given ID, which has not
// gone out: it is never published and its ID can be saved again. Inside
// [Store.InTx] the cancel takes effect when the transaction commits, and
// until then no relay claims the message (as a database's row lock would
// keep it); a message saved earlier in the same transaction is taken out
// of it. A message that is not scheduled, not committed, claimed or
// attempted by a relay, replayed from the dead letters, dead or unknown
// returns an error matching [txm.ErrNotScheduled].
// Another live transaction's cancel or reschedule of the same message
// makes Cancel wait for that transaction to end.
func (o *Outbox) Cancel(ctx context.Context, id string) error {
	if err := o.s.changeScheduled(ctx, id, nil); err != nil {
		return fmt.Errorf("memstore: cancel %q: %w", id, err)
	}
	return nil
}

// Reschedule moves the scheduled message with the given ID to at and sets
// its [async.MetaDeliverAt] to at, under the rules of [Outbox.Cancel]. A
// zero at, or one that is not before the message's expiry, returns an
// error matching [txm.ErrInvalidMetadata].
func (o *Outbox) Reschedule(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("memstore: reschedule %q: zero time: %w", id, txm.ErrInvalidMetadata)
	}
	if err := o.s.changeScheduled(ctx, id, &at); err != nil {
		return fmt.Errorf("memstore: reschedule %q: %w", id, err)
	}
	return nil
}

func (s *Store) changeScheduled(ctx context.Context, id string, at *time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := s.txFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if t != nil && t.ended {
			return ErrTxDone
		}
		if t != nil && s.outRes[id] == t { // saved in this transaction
			i := slices.IndexFunc(t.outbox, func(m async.Message) bool { return m.ID() == id })
			m := t.outbox[i]
			if _, ok := m.Metadata()[async.MetaDeliverAt]; !ok {
				return txm.ErrNotScheduled
			}
			if at == nil {
				t.outbox = slices.Delete(t.outbox, i, i+1)
				delete(s.outRes, id)
				return nil
			}
			_, exp, _ := txm.ScheduleOf(m.Metadata())
			if err := checkBefore(*at, exp); err != nil {
				return err
			}
			t.outbox[i] = withDeliverAt(m, *at)
			return nil
		}
		e := s.entries[id]
		if e == nil || e.state != statePending || !e.scheduled || e.attempts > 0 || e.dueAt.IsZero() || s.now().Before(e.leasedUntil) {
			return txm.ErrNotScheduled
		}
		if o := e.lockedBy; o != nil && o != t {
			s.mu.Unlock()
			select {
			case <-o.done:
				s.mu.Lock()
				continue
			case <-ctx.Done():
				s.mu.Lock()
				return ctx.Err()
			}
		}
		if t != nil && slices.ContainsFunc(t.ops, func(op schedOp) bool { return op.e == e && op.at == nil }) {
			return txm.ErrNotScheduled // cancelled earlier in this transaction
		}
		if at != nil {
			if err := checkBefore(*at, e.expiresAt); err != nil {
				return err
			}
		}
		op := schedOp{e: e, at: at}
		if t == nil {
			s.applyLocked(op)
			if at != nil {
				s.signal()
			}
			return nil
		}
		e.lockedBy = t
		t.ops = append(t.ops, op)
		return nil
	}
}

// checkBefore refuses a delivery time that is not before the expiry.
func checkBefore(at, expiry time.Time) error {
	if !expiry.IsZero() && !at.Before(expiry) {
		return fmt.Errorf("the delivery time %s is not before the message's expiry %s: %w",
			async.FormatTime(at), async.FormatTime(expiry), txm.ErrInvalidMetadata)
	}
	return nil
}

// applyLocked applies a cancel or reschedule to a message still pending.
func (s *Store) applyLocked(op schedOp) {
	e := op.e
	e.lockedBy = nil
	if e.state != statePending || s.entries[e.msg.ID()] != e {
		return
	}
	if op.at == nil {
		s.leaveLocked(e)
		delete(s.entries, e.msg.ID())
		return
	}
	e.msg = withDeliverAt(e.msg, *op.at)
	e.deliverAt = *op.at
	e.dueAt = *op.at
	s.waiting[e.msg.ID()] = e
}

// withDeliverAt returns a copy of m whose delivery time is at. The payload
// is shared: stored messages are never modified.
func withDeliverAt(m async.Message, at time.Time) async.Message {
	md := maps.Clone(m.Metadata())
	md[async.MetaDeliverAt] = async.FormatTime(at)
	return async.NewMessageFromEnvelope(async.Envelope{
		ID: m.ID(), Subject: m.Subject(), Name: m.MessageName(), Metadata: md, SentAt: m.SentAt(), Data: m.Data(),
	})
}

// NextDue returns how long until the earliest pending message that is not
// due yet (scheduled, or waiting for a retry) falls due, by the store's
// clock; ok is false when there is none. It implements [txm.DueReporter].
func (o *Outbox) NextDue(ctx context.Context) (time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, fmt.Errorf("memstore: next due: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var next time.Time
	for _, e := range s.waiting {
		if e.dueAt.After(now) && e.lockedBy == nil {
			next = earliest(next, e.dueAt)
		}
	}
	if next.IsZero() {
		return 0, false, nil
	}
	return next.Sub(now), true, nil
}
