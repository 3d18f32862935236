package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

var (
	_ txm.Scheduler   = (*Outbox)(nil)
	_ txm.DueReporter = (*Outbox)(nil)
)

// A scheduled message (one saved with [async.MetaDeliverAt]) is stored with
// its delivery time as its next attempt time and without a partition key,
// which the claims read as outside the key's sequence ([txm.SequenceKey]);
// its metadata keeps the key. Until a relay attempts it, it is the one
// pending message whose attempts are 0 and whose next attempt time is set:
// that is how Stats, Cancel and Reschedule tell it from a retry.

// schedule sets the delivery time of a message just inserted in q's
// transaction.
func (s *Store) schedule(ctx context.Context, q querier, r record) error {
	if _, err := q.exec(ctx, s.stmts.schedule, r.id, s.eng.timeArg(r.deliverAt)); err != nil {
		return fmt.Errorf("set the delivery time: %w", err)
	}
	return nil
}

// saveScheduled saves scheduled records one by one in the transaction of
// q, skipping stored IDs, and returns how many it inserted.
func (s *Store) saveScheduled(ctx context.Context, q querier, h *txHolder, recs []record) (int64, error) {
	var total int64
	for _, r := range recs {
		n, err := s.eng.save(ctx, s, q, h, []any{r.id, r.topic, r.name, r.key, r.metadata, r.payload, s.eng.timeArg(r.sentAt)})
		if err != nil {
			return total, err
		}
		if n == 0 {
			continue
		}
		if err := s.schedule(ctx, q, r); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// Cancel deletes the scheduled message with the given ID, in the
// transaction ctx carries (or on its own): it is never published and its
// ID can be saved again. Until the transaction ends, the message's row is
// locked (on SQLite, the database), so no relay claims it. A message that
// was not saved with a delivery time, is not committed, was claimed or
// attempted by a relay, is published, dead or unknown returns an error
// matching [txm.ErrNotScheduled]. It implements [txm.Scheduler].
func (o *Outbox) Cancel(ctx context.Context, id string) error {
	s := o.s
	q, _, err := s.querier(ctx)
	if err != nil {
		return s.fail(ctx, "cancel", err)
	}
	n, err := q.exec(ctx, s.stmts.cancel, s.args([]any{id, sqliteNow})...)
	if err != nil {
		return s.fail(ctx, "cancel", err)
	}
	if n == 0 {
		return s.fail(ctx, "cancel", fmt.Errorf("message %s: %w", id, txm.ErrNotScheduled))
	}
	return nil
}

// Reschedule moves the scheduled message with the given ID to at and sets
// its [async.MetaDeliverAt] to at, in the transaction ctx carries (or one of
// its own), under the rules of [Outbox.Cancel]. A zero at, or one that is
// not before the message's expiry, returns an error matching
// [txm.ErrInvalidMetadata] and changes nothing. It implements
// [txm.Scheduler]. A relay of this store wakes for the new time once the
// change commits when InTx ran it; a relay of another process (or one of a
// caller's own transaction) learns of an earlier time when it next asks
// (Outbox.NextDue): at its poll, or at the old time if that comes first.
func (o *Outbox) Reschedule(ctx context.Context, id string, at time.Time) error {
	s := o.s
	if at.IsZero() {
		return s.fail(ctx, "reschedule", fmt.Errorf("message %s: zero time: %w", id, txm.ErrInvalidMetadata))
	}
	if holderFrom(ctx) == nil {
		return s.InTx(ctx, func(ctx context.Context) error { return o.reschedule(ctx, id, at) })
	}
	return o.reschedule(ctx, id, at)
}

func (o *Outbox) reschedule(ctx context.Context, id string, at time.Time) error {
	s := o.s
	q, h, err := s.querier(ctx)
	if err != nil {
		return s.fail(ctx, "reschedule", err)
	}
	raw, found, err := scheduledMeta(ctx, q, s.stmts.scheduledMeta, s.args([]any{id, sqliteNow}))
	if err != nil {
		return s.fail(ctx, "reschedule", err)
	}
	if !found {
		return s.fail(ctx, "reschedule", fmt.Errorf("message %s: %w", id, txm.ErrNotScheduled))
	}
	md, err := decodeMetadata(raw)
	if err != nil {
		return s.fail(ctx, "reschedule", fmt.Errorf("message %s: %w", id, err))
	}
	if _, exp, err := txm.ScheduleOf(md); err == nil && !exp.IsZero() && !at.Before(exp) {
		return s.fail(ctx, "reschedule", fmt.Errorf("message %s: the delivery time %s is not before its expiry %s: %w",
			id, async.FormatTime(at), async.FormatTime(exp), txm.ErrInvalidMetadata))
	}
	md[async.MetaDeliverAt] = async.FormatTime(at)
	enc, err := encodeMetadata(md)
	if err != nil {
		return s.fail(ctx, "reschedule", fmt.Errorf("message %s: %w", id, err))
	}
	if _, err := q.exec(ctx, s.stmts.reschedule, id, s.eng.timeArg(at), enc); err != nil {
		return s.fail(ctx, "reschedule", err)
	}
	s.saved(h)
	return nil
}

// NextDue returns how long, on the database's clock (the process's for
// SQLite), until the earliest pending message that is not due yet
// (scheduled, or waiting for a retry) falls due; ok is false when there is
// none. It implements [txm.DueReporter]: an idle relay wakes then.
func (o *Outbox) NextDue(ctx context.Context) (time.Duration, bool, error) {
	s := o.s
	q, _, err := s.querier(ctx)
	if err != nil {
		return 0, false, s.fail(ctx, "next due", err)
	}
	var micros int64
	if err := queryRow(ctx, q, s.stmts.nextDue, s.planned(s.args([]any{sqliteNow})), &micros); err != nil {
		return 0, false, s.fail(ctx, "next due", err)
	}
	if micros <= 0 {
		return 0, false, nil
	}
	return time.Duration(micros) * time.Microsecond, true, nil
}

// scheduledMeta reads the metadata of a scheduled message; found is false
// when there is no such message.
func scheduledMeta(ctx context.Context, q querier, stmt string, args []any) (raw []byte, found bool, err error) {
	rows, err := q.query(ctx, stmt, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, false, rows.Err()
	}
	if err := rows.Scan(&raw); err != nil {
		return nil, false, err
	}
	return raw, true, rows.Close()
}
