package sqlstore

import (
	"context"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// Inbox is the inbox of one consumer group in a [Store]. It implements
// [txm.InboxStore] and [txm.Transactor], so [txm.InboxHandler] records a
// message and runs the handler in one transaction.
type Inbox struct {
	s     *Store
	group string
}

var (
	_ txm.InboxStore   = (*Inbox)(nil)
	_ txm.Transactor   = (*Inbox)(nil)
	_ txm.GroupedInbox = (*Inbox)(nil)
)

// Group returns the consumer group of the inbox; [txm.InboxHandler] checks
// it against the group of the subscription ([txm.GroupedInbox]).
func (i *Inbox) Group() string { return i.group }

// InTx is [Store.InTx]: the outbox and every inbox of a store share its
// transactions.
func (i *Inbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return i.s.InTx(ctx, fn)
}

// Save records msg for the inbox's group, in the transaction ctx carries
// (without one it commits on its own). A message ID the group recorded
// before returns an error matching [txm.ErrDuplicateMessage] and leaves the
// transaction usable: the insert skips the conflict instead of failing.
func (i *Inbox) Save(ctx context.Context, msg async.IncomingMessage) error {
	s := i.s
	q, _, err := s.querier(ctx)
	if err != nil {
		return s.fail(ctx, "inbox save", err)
	}
	if msg == nil {
		return s.fail(ctx, "inbox save", errNilMessage)
	}
	r, err := s.encode(msg)
	if err != nil {
		return s.fail(ctx, "inbox save", err)
	}
	args := []any{i.group, r.id, r.topic, r.name, r.metadata, r.payload, s.eng.timeArg(r.sentAt), s.eng.timeArg(msg.ReceivedAt()), sqliteNow}
	n, err := q.exec(ctx, s.stmts.inboxSave, s.args(args)...)
	if err != nil {
		return s.fail(ctx, "inbox save", err)
	}
	if n == 0 {
		return s.fail(ctx, "inbox save", txm.ErrDuplicateMessage(r.id))
	}
	return nil
}

// PurgeInbox deletes at most limit records of the inbox's group saved more
// than olderThan ago (on the database's clock) and returns how many it
// deleted. Call it again while it returns limit to purge in small batches.
// Keep records longer than the broker may redeliver a message: a purged
// record no longer stops a duplicate.
func (i *Inbox) PurgeInbox(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	return i.s.purge(ctx, "purge inbox", i.s.stmts.inboxPurge, olderThan, limit, i.group)
}
