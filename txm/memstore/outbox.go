package memstore

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// Outbox is the outbox of a [Store]. It implements [txm.OutboxStore] and
// every optional capability of the txm package: [txm.Transactor],
// [txm.Claimer], [txm.DeadLetterStore], [txm.BatchSaver],
// [txm.StatsReporter], [txm.Purger], [txm.FullWaker], [txm.Scheduler] and
// [txm.DueReporter]. It is safe for concurrent use.
//
// Messages are copied on save and on the way out, so neither the saver nor
// the relay can change what is stored.
type Outbox struct{ s *Store }

var (
	_ txm.OutboxStore     = (*Outbox)(nil)
	_ txm.Transactor      = (*Outbox)(nil)
	_ txm.TxReporter      = (*Outbox)(nil)
	_ txm.Claimer         = (*Outbox)(nil)
	_ txm.DeadLetterStore = (*Outbox)(nil)
	_ txm.BatchSaver      = (*Outbox)(nil)
	_ txm.StatsReporter   = (*Outbox)(nil)
	_ txm.Purger          = (*Outbox)(nil)
	_ txm.FullWaker       = (*Outbox)(nil)
	_ txm.Scheduler       = (*Outbox)(nil)
	_ txm.DueReporter     = (*Outbox)(nil)
)

type state uint8

const (
	statePending state = iota
	statePublished
	stateDead
)

// entry is one stored outbox message. Its fields are guarded by the
// store's mutex; msg is never modified after the entry is created.
type entry struct {
	msg         async.Message
	key         string // partition key, "" for none
	topic       string
	seq         uint64 // commit order
	state       state
	attempts    int
	lastError   string
	savedAt     time.Time
	dueAt       time.Time // next attempt; zero means due
	leasedUntil time.Time // zero means not leased
	publishedAt time.Time
	deadAt      time.Time
	elem        *list.Element // in Store.queue or Store.published; nil when in neither
	// A scheduled message (one saved with a delivery time) is outside its
	// key's sequence: its key field is "".
	scheduled bool
	deliverAt time.Time // the delivery time of a scheduled message
	expiresAt time.Time // zero: no expiry
	lockedBy  *tx       // a live transaction that cancels or moves it; claims skip it
}

// insertLocked stores a committed message (already cloned) as pending.
func (s *Store) insertLocked(msg async.Message, now time.Time) {
	s.seq++
	deliverAt, expiresAt, _ := txm.ScheduleOf(msg.Metadata()) // checked by Save
	e := &entry{
		msg:       msg,
		key:       txm.SequenceKey(msg.Metadata()),
		topic:     msg.Subject(),
		seq:       s.seq,
		savedAt:   now,
		scheduled: !deliverAt.IsZero(),
		deliverAt: deliverAt,
		dueAt:     deliverAt,
		expiresAt: expiresAt,
	}
	e.elem = s.queue.PushBack(e)
	s.entries[msg.ID()] = e
	s.pending[e.topic]++
	if e.scheduled {
		s.sched[msg.ID()] = e
		s.waiting[msg.ID()] = e
	}
}

func validate(msg async.Message) error {
	if msg == nil {
		return errors.New("nil message")
	}
	if msg.ID() == "" {
		return errors.New("message has no ID")
	}
	if _, _, err := txm.ScheduleOf(msg.Metadata()); err != nil {
		return err
	}
	return nil
}

// saveOutbox saves a clone of msg, in t when t is not nil, and reports
// whether it was inserted (false for a duplicate).
func (s *Store) saveOutbox(ctx context.Context, t *tx, msg async.Message) (bool, error) {
	clone := async.Clone(msg)
	id := clone.ID()
	s.mu.Lock()
	free, err := s.reserve(ctx, t,
		func() bool { _, ok := s.entries[id]; return ok },
		func() *tx { return s.outRes[id] })
	if err != nil || !free {
		s.mu.Unlock()
		return false, err
	}
	if t != nil {
		t.outbox = append(t.outbox, clone)
		s.outRes[id] = t
		s.mu.Unlock()
		return true, nil
	}
	s.insertLocked(clone, s.now())
	s.mu.Unlock()
	s.signal()
	return true, nil
}

// Save stores a copy of msg as pending. Inside [Store.InTx] (or
// [Outbox.InTx]) it becomes visible when the transaction commits;
// otherwise it commits at once. An ID that is stored, or saved in the same
// transaction, returns an error matching [txm.ErrDuplicateMessage]. An ID
// saved by another live transaction makes Save wait for that transaction
// to end. A message without an ID is an error.
func (o *Outbox) Save(ctx context.Context, msg async.Message) error {
	if err := validate(msg); err != nil {
		return fmt.Errorf("memstore: save: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: save %q: %w", msg.ID(), err)
	}
	ok, err := o.s.saveOutbox(ctx, o.s.txFrom(ctx), msg)
	if err != nil {
		return fmt.Errorf("memstore: save %q: %w", msg.ID(), err)
	}
	if !ok {
		return fmt.Errorf("memstore: save: %w", txm.ErrDuplicateMessage(msg.ID()))
	}
	return nil
}

// SaveMany saves msgs as Save would, in one transaction (the one in ctx,
// or its own), skipping duplicates without error, including duplicates
// within msgs. It returns how many messages it inserted. On an error
// nothing of this call is stored (when ctx carries a transaction, the
// messages saved before the error stay in it).
func (o *Outbox) SaveMany(ctx context.Context, msgs []async.Message) (int, error) {
	for _, m := range msgs {
		if err := validate(m); err != nil {
			return 0, fmt.Errorf("memstore: save many: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memstore: save many: %w", err)
	}
	n := 0
	err := o.s.InTx(ctx, func(ctx context.Context) error {
		t := o.s.txFrom(ctx)
		for _, m := range msgs {
			ok, err := o.s.saveOutbox(ctx, t, m)
			if err != nil {
				return fmt.Errorf("memstore: save many: %q: %w", m.ID(), err)
			}
			if ok {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// InTransaction reports whether ctx carries a transaction of the outbox's
// store, begun by [Store.InTx] (or [Outbox.InTx], [Inbox.InTx]). It
// implements [txm.TxReporter], so [txm.OutboxPublisher] refuses a save
// outside a transaction with [txm.ErrNoTransaction].
func (o *Outbox) InTransaction(ctx context.Context) bool { return o.s.txFrom(ctx) != nil }

// InTx runs fn in a transaction of the outbox's store; see [Store.InTx].
func (o *Outbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return o.s.InTx(ctx, fn)
}

// FindUnpublished claims up to limit messages with the store's
// [Config.DefaultLease] and returns them, so relays that use only the
// three [txm.OutboxStore] methods never get the same message at once. It
// follows the rules of [Outbox.Claim]. A limit of zero or less returns
// nothing.
func (o *Outbox) FindUnpublished(ctx context.Context, limit int) ([]async.Message, error) {
	claimed, err := o.Claim(ctx, limit, 0)
	if err != nil {
		return nil, fmt.Errorf("memstore: find unpublished: %w", err)
	}
	msgs := make([]async.Message, len(claimed))
	for i, c := range claimed {
		msgs[i] = c.Message
	}
	return msgs, nil
}

// MarkPublished marks the messages with the given IDs published: they are
// not returned again, and [Outbox.Purge] removes them later. Unknown and
// already published IDs are ignored. A dead message marked published
// leaves the dead letters.
func (o *Outbox) MarkPublished(ctx context.Context, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: mark published: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, id := range ids {
		e := s.entries[id]
		if e == nil || e.state == statePublished {
			continue
		}
		s.leaveLocked(e)
		e.state = statePublished
		e.publishedAt = now
		e.leasedUntil = time.Time{}
		e.elem = s.published.PushBack(e)
	}
	return nil
}

// leaveLocked takes a pending or dead entry out of the queue and of the
// counts of its state.
func (s *Store) leaveLocked(e *entry) {
	switch e.state {
	case statePending:
		decr(s.pending, e.topic)
		delete(s.sched, e.msg.ID())
		delete(s.waiting, e.msg.ID())
	case stateDead:
		decr(s.deadTopic, e.topic)
		delete(s.dead, e.msg.ID())
	}
	if e.elem != nil {
		s.queue.Remove(e.elem)
		e.elem = nil
	}
}

func decr(m map[string]int64, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// Claim leases up to limit pending messages that are due (for a scheduled
// message: its delivery time has come) and not leased,
// for lease (zero or less means [Config.DefaultLease]), and returns them in
// save order with their attempts. Messages that share a partition key come
// out in save order, and a key whose earliest unpublished message is
// leased, waiting for a retry or dead is parked: none of its messages is
// returned. A scheduled message is outside its key's sequence
// ([txm.SequenceKey]): it neither waits for its key nor parks it. A
// message that a live transaction cancels or reschedules is skipped. A
// limit of zero or less returns nothing.
func (o *Outbox) Claim(ctx context.Context, limit int, lease time.Duration) ([]txm.Claimed, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: claim: %w", err)
	}
	if limit <= 0 {
		return nil, nil
	}
	s := o.s
	if lease <= 0 {
		lease = s.lease
	}
	s.mu.Lock()
	now := s.now()
	until := now.Add(lease)
	var (
		parked map[string]struct{}
		got    []*entry
	)
	for el := s.queue.Front(); el != nil && len(got) < limit; el = el.Next() {
		e := el.Value.(*entry)
		if e.key != "" && parked != nil {
			if _, ok := parked[e.key]; ok {
				continue
			}
		}
		if e.lockedBy != nil { // only scheduled messages, which park nothing
			continue
		}
		if e.state != statePending || now.Before(e.dueAt) || now.Before(e.leasedUntil) {
			if e.key != "" {
				if parked == nil {
					parked = make(map[string]struct{})
				}
				parked[e.key] = struct{}{}
			}
			continue
		}
		e.leasedUntil = until
		if !e.dueAt.IsZero() {
			delete(s.waiting, e.msg.ID())
		}
		got = append(got, e)
	}
	out := make([]txm.Claimed, len(got))
	for i, e := range got {
		out[i] = txm.Claimed{Message: e.msg, Attempts: e.attempts}
	}
	s.mu.Unlock()
	// Stored messages are never modified, so they can be copied unlocked.
	for i := range out {
		out[i].Message = async.Clone(out[i].Message)
	}
	return out, nil
}

// ExtendClaims renews, for lease from now (zero or less means
// [Config.DefaultLease]), the lease of the pending messages with the given
// IDs that hold one. Unknown IDs and messages that are not leased are
// ignored.
func (o *Outbox) ExtendClaims(ctx context.Context, lease time.Duration, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: extend claims: %w", err)
	}
	s := o.s
	if lease <= 0 {
		lease = s.lease
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	until := s.now().Add(lease)
	for _, id := range ids {
		if e := s.entries[id]; e != nil && e.state == statePending && !e.leasedUntil.IsZero() {
			e.leasedUntil = until
		}
	}
	return nil
}

// ReleaseClaims ends the lease of the pending messages with the given IDs
// without counting an attempt, so Claim returns them again at once.
// Unknown IDs are ignored.
func (o *Outbox) ReleaseClaims(ctx context.Context, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: release claims: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if e := s.entries[id]; e != nil && e.state == statePending {
			e.leasedUntil = time.Time{}
		}
	}
	return nil
}

// MarkFailed records a failed publish of a pending message: it ends the
// lease, adds one to its attempts, keeps cause as its last error and makes
// it due again retryAfter from now. Its key stays parked until then. An
// unknown ID, or one that is not pending, is ignored.
func (o *Outbox) MarkFailed(ctx context.Context, id string, retryAfter time.Duration, cause string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: mark failed: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[id]; e != nil && e.state == statePending {
		e.attempts++
		e.lastError = cause
		e.leasedUntil = time.Time{}
		e.dueAt = s.now().Add(retryAfter)
		s.waiting[id] = e
	}
	return nil
}

// MarkDead moves a pending message to the dead letters: it ends the lease,
// adds one to its attempts and keeps cause as its last error. Its key
// stays parked until it is replayed. An unknown ID, or one that is not
// pending, is ignored.
func (o *Outbox) MarkDead(ctx context.Context, id string, cause string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: mark dead: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[id]
	if e == nil || e.state != statePending {
		return nil
	}
	decr(s.pending, e.topic)
	delete(s.sched, id)
	delete(s.waiting, id)
	if e.key == "" { // parks nothing: keep it out of the claim scan
		s.queue.Remove(e.elem)
		e.elem = nil
	}
	e.state = stateDead
	e.attempts++
	e.lastError = cause
	e.leasedUntil = time.Time{}
	e.deadAt = s.now()
	s.dead[id] = e
	s.deadTopic[e.topic]++
	return nil
}

// selectDeadLocked returns the dead messages that filter selects, in save
// order, at most filter.Limit of them when it is positive.
func (s *Store) selectDeadLocked(filter txm.DeadLetterFilter) []*entry {
	var sel []*entry
	if len(filter.IDs) > 0 {
		seen := make(map[string]struct{}, len(filter.IDs))
		for _, id := range filter.IDs {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
			if e := s.dead[id]; e != nil && (filter.Topic == "" || e.topic == filter.Topic) {
				sel = append(sel, e)
			}
		}
	} else {
		for _, e := range s.dead {
			if filter.Topic == "" || e.topic == filter.Topic {
				sel = append(sel, e)
			}
		}
	}
	slices.SortFunc(sel, func(a, b *entry) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	if filter.Limit > 0 && len(sel) > filter.Limit {
		sel = sel[:filter.Limit]
	}
	return sel
}

// DeadLetters returns the dead letters that filter selects, in save order.
// Zero fields of filter select everything; a Limit of zero or less means no
// limit.
func (o *Outbox) DeadLetters(ctx context.Context, filter txm.DeadLetterFilter) ([]txm.DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: dead letters: %w", err)
	}
	s := o.s
	s.mu.Lock()
	sel := s.selectDeadLocked(filter)
	out := make([]txm.DeadLetter, len(sel))
	for i, e := range sel {
		out[i] = txm.DeadLetter{Message: e.msg, Attempts: e.attempts, LastError: e.lastError, DeadAt: e.deadAt}
	}
	s.mu.Unlock()
	for i := range out {
		out[i].Message = async.Clone(out[i].Message)
	}
	return out, nil
}

// Replay moves the dead letters that filter selects (as for
// [Outbox.DeadLetters]) back to pending, due at once, with their attempts
// reset to zero and their last error cleared, and returns how many it
// moved. Each keeps its place in its key's order, which unparks the key.
func (o *Outbox) Replay(ctx context.Context, filter txm.DeadLetterFilter) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memstore: replay: %w", err)
	}
	s := o.s
	s.mu.Lock()
	sel := s.selectDeadLocked(filter)
	for _, e := range sel {
		s.leaveLocked(e)
		e.state = statePending
		e.attempts = 0
		e.lastError = ""
		e.dueAt = time.Time{}
		e.deadAt = time.Time{}
		s.pending[e.topic]++
		if e.scheduled {
			if now := s.now(); e.deliverAt.After(now) {
				e.deliverAt = now // due at once, as every replayed message
			}
			s.sched[e.msg.ID()] = e
		}
		s.requeueLocked(e)
	}
	s.mu.Unlock()
	if len(sel) > 0 {
		s.signal()
	}
	return len(sel), nil
}

// requeueLocked puts e back into the queue at its save-order place. It
// scans from the back, where replayed messages usually belong.
func (s *Store) requeueLocked(e *entry) {
	for el := s.queue.Back(); el != nil; el = el.Prev() {
		if el.Value.(*entry).seq < e.seq {
			e.elem = s.queue.InsertAfter(e, el)
			return
		}
	}
	e.elem = s.queue.PushFront(e)
}

// Stats reports the pending (due, including leased and waiting for a
// retry), scheduled (delivery time not come yet) and dead messages, overall
// and by topic, with the time the oldest pending message became due and
// the next delivery time of the scheduled ones. ByTopic is never nil and
// lists every topic with a pending, scheduled or dead message.
func (o *Outbox) Stats(ctx context.Context) (txm.OutboxStats, error) {
	if err := ctx.Err(); err != nil {
		return txm.OutboxStats{}, fmt.Errorf("memstore: stats: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	by := make(map[string]txm.TopicStats, len(s.pending)+len(s.deadTopic))
	var st txm.OutboxStats
	for topic, n := range s.pending {
		ts := by[topic]
		ts.Pending = n
		by[topic] = ts
	}
	for topic, n := range s.deadTopic {
		ts := by[topic]
		ts.Dead = n
		by[topic] = ts
	}
	for _, e := range s.sched {
		ts := by[e.topic]
		if now.Before(e.deliverAt) {
			ts.Pending--
			ts.Scheduled++
			ts.NextDue = earliest(ts.NextDue, e.deliverAt)
		} else {
			ts.OldestPending = earliest(ts.OldestPending, later(e.savedAt, e.deliverAt))
		}
		by[e.topic] = ts
	}
	// The queue is in save order: the first unscheduled pending message of
	// a topic is its oldest.
	first := make(map[string]bool, len(s.pending))
	for el := s.queue.Front(); el != nil && len(first) < len(s.pending); el = el.Next() {
		e := el.Value.(*entry)
		if e.state != statePending || e.scheduled || first[e.topic] {
			continue
		}
		first[e.topic] = true
		ts := by[e.topic]
		ts.OldestPending = earliest(ts.OldestPending, e.savedAt)
		by[e.topic] = ts
	}
	for _, ts := range by {
		st.Pending += ts.Pending
		st.Scheduled += ts.Scheduled
		st.Dead += ts.Dead
		st.OldestPending = earliest(st.OldestPending, ts.OldestPending)
		st.NextDue = earliest(st.NextDue, ts.NextDue)
	}
	st.ByTopic = by
	return st, nil
}

// earliest returns the earlier of a and b, a zero time standing for none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Purge deletes at most limit published messages that were published
// more than olderThan ago, oldest first, and returns how many it deleted.
// A deleted message's ID can be saved again. A limit of zero or less
// deletes nothing.
func (o *Outbox) Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memstore: purge: %w", err)
	}
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := s.now().Add(-olderThan)
	n := 0
	for n < limit {
		el := s.published.Front()
		if el == nil {
			break
		}
		e := el.Value.(*entry)
		if !e.publishedAt.Before(cutoff) {
			break // publish order is time order
		}
		s.published.Remove(el)
		e.elem = nil
		delete(s.entries, e.msg.ID())
		n++
	}
	return n, nil
}

// Wakeups returns a channel that receives a value after a commit that
// saved outbox messages, and after a replay. Sends never block and
// coalesce: one value may stand for many commits. The channel is shared:
// when several relays watch one store, each wake-up reaches one of them.
func (o *Outbox) Wakeups() <-chan struct{} { return o.s.wake }

// WakesForAllSaves reports true: every save to a memstore is made in this
// process and wakes the relay.
func (o *Outbox) WakesForAllSaves() bool { return true }
