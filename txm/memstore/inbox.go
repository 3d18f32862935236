package memstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// Inbox is the inbox of one consumer group in a [Store]. It implements
// [txm.InboxStore] and [txm.Transactor] and is safe for concurrent use. It
// records the IDs of the messages it saved and when.
type Inbox struct {
	s     *Store
	group string
}

var (
	_ txm.InboxStore   = (*Inbox)(nil)
	_ txm.Transactor   = (*Inbox)(nil)
	_ txm.GroupedInbox = (*Inbox)(nil)
)

// Save records msg's ID in the group's inbox. Inside [Store.InTx] (or
// [Inbox.InTx]) the record commits with the transaction; otherwise at
// once. An ID already recorded by the group, or saved in the same
// transaction, returns an error matching [txm.ErrDuplicateMessage]. An ID
// saved by another live transaction makes Save wait for that transaction
// to end: if it commits, Save reports a duplicate, and if it rolls back,
// Save records the ID. A message without an ID is an error.
func (in *Inbox) Save(ctx context.Context, msg async.IncomingMessage) error {
	if msg == nil {
		return fmt.Errorf("memstore: inbox save: nil message")
	}
	id := msg.ID()
	if id == "" {
		return fmt.Errorf("memstore: inbox save: message has no ID")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: inbox save %q: %w", id, err)
	}
	s := in.s
	t := s.txFrom(ctx)
	k := inboxKey{group: in.group, id: id}
	s.mu.Lock()
	defer s.mu.Unlock()
	free, err := s.reserve(ctx, t,
		func() bool { _, ok := s.inbox[k]; return ok },
		func() *tx { return s.inRes[k] })
	if err != nil {
		return fmt.Errorf("memstore: inbox save %q: %w", id, err)
	}
	if !free {
		return fmt.Errorf("memstore: inbox save: %w", txm.ErrDuplicateMessage(id))
	}
	if t != nil {
		t.inbox = append(t.inbox, k)
		s.inRes[k] = t
		return nil
	}
	s.inbox[k] = s.now()
	return nil
}

// InTx runs fn in a transaction of the inbox's store; see [Store.InTx].
func (in *Inbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return in.s.InTx(ctx, fn)
}

// PurgeInbox deletes at most limit records of the inbox's group saved more
// than olderThan ago (on the store's clock), oldest first, and returns how
// many it deleted; a limit of zero or less deletes nothing. Its shape is
// [txm.PurgeFunc], for [txm.RunRetention]. Keep records longer than the
// broker may redeliver a message: a purged record's message is handled
// again if it comes back.
func (in *Inbox) PurgeInbox(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memstore: purge inbox: %w", err)
	}
	if limit <= 0 {
		return 0, nil
	}
	s := in.s
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := s.now().Add(-olderThan)
	type rec struct {
		k  inboxKey
		at time.Time
	}
	var old []rec
	for k, at := range s.inbox {
		if k.group == in.group && at.Before(cutoff) {
			old = append(old, rec{k, at})
		}
	}
	slices.SortFunc(old, func(a, b rec) int { return a.at.Compare(b.at) })
	if len(old) > limit {
		old = old[:limit]
	}
	for _, r := range old {
		delete(s.inbox, r.k)
	}
	return len(old), nil
}

// Group returns the consumer group of the inbox; [txm.InboxHandler] checks
// it against the group of the subscription ([txm.GroupedInbox]).
func (in *Inbox) Group() string { return in.group }
