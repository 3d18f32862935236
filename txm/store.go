package txm

import (
	"context"
	"time"

	"github.com/transmanager/transmanager/async"
)

// OutboxStore defines the interface for an outbox storage mechanism.
// Implementations of this interface are responsible for storing and
// retrieving messages that are pending publication.
//
// Save uses the transaction carried by ctx when the store supports one (see
// the store's package); without one it commits on its own. Saving an ID that
// is already stored returns an error that matches [ErrDuplicateMessage] and
// leaves the stored message and any transaction in ctx intact. Save is the
// lower-level API and makes no transaction check: [OutboxPublisher], the
// way applications save, refuses a save outside a transaction with
// [ErrNoTransaction] when the store implements [TxReporter].
//
// A store may implement the optional capabilities [Transactor],
// [TxReporter], [Claimer], [LockingClaimer], [DeadLetterStore],
// [BatchSaver], [StatsReporter], [Purger], [Waker], [Scheduler] and
// [DueReporter];
// the relay (and [OutboxPublisher], for TxReporter) discovers them by type
// assertion and falls back to the three
// methods here when they are missing.
type OutboxStore interface {
	// Save persists a message in the outbox store and returns an error
	// if the save operation fails.
	Save(context.Context, async.Message) error

	// FindUnpublished retrieves a slice of messages that have not yet been
	// published, up to a maximum number specified by the limit argument.
	FindUnpublished(context.Context, int) ([]async.Message, error)

	// MarkPublished updates the status of a batch of messages, identified by
	// their unique IDs, to indicate that they have been successfully published
	MarkPublished(context.Context, ...string) error
}

// InboxStore is an interface that abstracts the storage mechanism for
// incoming messages. Implementations of this interface should handle the
// persistence of message data.
//
// Save returns an error matching [ErrDuplicateMessage] when the message's ID
// was saved before (by the same consumer group, for stores that keep one
// inbox per group). A store that implements [Transactor] lets
// [InboxHandler] run the save and the handler in one transaction.
type InboxStore interface {
	// Save attempts to save an incoming message to the store.
	// It returns an error if the saving process fails.
	Save(context.Context, async.IncomingMessage) error
}

// Transactor is the capability of a store that can run a function in one
// transaction. InTx runs fn with a context that carries the transaction;
// saves made through that context (and, for SQL stores, the caller's own
// statements on the transaction) commit when fn returns nil and roll back
// when it returns an error or panics. When ctx already carries a
// transaction of the store, InTx reuses it and leaves commit to its owner.
type Transactor interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// TxReporter is the capability of a store that can tell whether a context
// carries one of its transactions, one that its Save would use. InTransaction
// reports true inside the store's InTx and, for SQL stores, for a
// transaction of the caller's put in the context by the store package's
// helper (sqlstore.WithPgxTx, sqlstore.WithTx); false otherwise.
//
// [OutboxPublisher] uses it to refuse, with [ErrNoTransaction], a save that
// would commit on its own. A store without it cannot be checked: the
// publisher saves through it as before, in whatever transaction the store
// finds in the context or on its own.
type TxReporter interface {
	InTransaction(ctx context.Context) bool
}

// Claimed is a message handed to one relay by [Claimer.Claim].
type Claimed struct {
	Message async.Message
	// Attempts counts the failed publish attempts before this claim.
	Attempts int
}

// Claimer is the capability of a durable store that leases messages to
// relays, so several relays can share one store, and keeps each message's
// retry schedule.
//
// Claim returns up to limit pending messages that are due (their next
// attempt time, or for a scheduled message its delivery time, has come) and
// not leased, and leases them for lease: no other
// Claim returns them until the lease ends or they are released. Messages that
// share a partition key come out in the order they were saved, and a message
// is returned only when every earlier message of its key is published or is
// in the same result before it: a key whose head waits for a retry, is
// leased elsewhere or is dead is parked. A message with a delivery time is
// outside its key's sequence ([SequenceKey]): it neither waits nor parks. Lease times use the store's clock
// (the database's for SQL stores).
type Claimer interface {
	Claim(ctx context.Context, limit int, lease time.Duration) ([]Claimed, error)
	// ExtendClaims renews the lease of claimed messages.
	ExtendClaims(ctx context.Context, lease time.Duration, ids ...string) error
	// ReleaseClaims ends the lease of messages without counting an attempt,
	// so they can be claimed again at once.
	ReleaseClaims(ctx context.Context, ids ...string) error
	// MarkFailed records a failed publish: it ends the lease, adds one to
	// the message's attempts, keeps cause as its last error and makes it due
	// again after retryAfter.
	MarkFailed(ctx context.Context, id string, retryAfter time.Duration, cause string) error
}

// LockingClaimer is the capability of a store that can claim messages by
// locking them in a transaction instead of leasing them (see
// [ProcessorConfig.LockClaims]).
//
// ClaimLocked returns up to limit pending messages that are due and not
// leased, locked in the transaction ctx carries (begun by the store's
// InTx) and skipped by every other claim until that transaction ends: it
// writes no lease, and a rollback, or a relay that dies, frees them at
// once. The relay records the batch's outcome with the [Claimer] methods
// in the same transaction, so it commits with the end of the claim;
// ExtendClaims in that transaction leases messages past its end. Messages
// of a partition key come out in save order, as with Claim: a keyed
// message only when every earlier message of its key is published or in
// the same result before it.
type LockingClaimer interface {
	Claimer
	Transactor
	// With idle > 0 the store ends the claim's transaction, freeing its
	// messages, when it waits longer than idle for its next statement, as
	// a lease would expire. A store that cannot claim this way does not
	// implement LockingClaimer (sqlstore's SQLite store does not), so
	// that a relay with [ProcessorConfig.LockClaims] refuses it when it
	// is built instead of failing when it runs.
	ClaimLocked(ctx context.Context, limit int, idle time.Duration) ([]Claimed, error)
}

// DeadLetter is a message that the relay gave up on.
type DeadLetter struct {
	Message   async.Message
	Attempts  int
	LastError string
	DeadAt    time.Time
}

// DeadLetterFilter selects dead letters. Zero fields select everything;
// Limit 0 means no limit.
type DeadLetterFilter struct {
	IDs   []string
	Topic string
	Limit int
}

// DeadLetterStore is the capability of a store that keeps messages the relay
// gave up on. MarkDead ends the message's lease, adds one to its attempts and
// moves it to the dead letters with cause; its key stays parked behind it
// until it is replayed. Replay moves the selected dead letters back to
// pending, due at once with their attempts reset to zero, and returns how
// many it moved.
type DeadLetterStore interface {
	MarkDead(ctx context.Context, id string, cause string) error
	DeadLetters(ctx context.Context, filter DeadLetterFilter) ([]DeadLetter, error)
	Replay(ctx context.Context, filter DeadLetterFilter) (int, error)
}

// BatchSaver is the capability of a store that saves many messages in one
// round trip. SaveMany behaves as Save for each message, except that
// duplicates are skipped without error; it returns how many it inserted.
type BatchSaver interface {
	SaveMany(ctx context.Context, msgs []async.Message) (int, error)
}

// TopicStats is the state of one topic's outbox messages.
type TopicStats struct {
	// Pending counts the messages waiting to go out that are due: all but
	// the scheduled messages whose delivery time has not come (messages
	// waiting for a retry count here).
	Pending int64
	// Scheduled counts the messages whose delivery time ([WithDeliverAt])
	// has not come, by the store's clock.
	Scheduled int64
	Dead      int64
	// OldestPending is when the oldest pending message became due (its
	// save time, or its delivery time for a scheduled message), zero when
	// there is none. Scheduled messages not due yet do not count.
	OldestPending time.Time
	// NextDue is the earliest delivery time of the scheduled messages,
	// zero when there is none.
	NextDue time.Time
}

// OutboxStats is the state of an outbox.
type OutboxStats struct {
	TopicStats
	ByTopic map[string]TopicStats
}

// StatsReporter is the capability of a store that reports its backlog.
type StatsReporter interface {
	Stats(ctx context.Context) (OutboxStats, error)
}

// Purger is the capability of a store that removes old rows. Purge deletes
// at most limit published outbox messages published before olderThan ago and
// returns how many it deleted; callers repeat it to purge in small batches.
type Purger interface {
	Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error)
}

// Waker is the capability of a store that tells the relay when new messages
// were committed. The channel receives a value (without blocking the saver:
// wake-ups coalesce) after a save commits, in this process or, for stores
// that can listen, in another.
type Waker interface {
	Wakeups() <-chan struct{}
}

// FullWaker is the capability of a [Waker] that can tell whether its
// wake-ups currently come for every commit that saves messages, whichever
// process made it (memstore always; sqlstore on PostgreSQL while its
// LISTEN connection is up). After a claim that came back with fewer than
// BatchSize messages, the relay waits for the next wake-up only while
// WakesForAllSaves reports true; otherwise it claims again at once, which
// is how it finds what other processes saved.
type FullWaker interface {
	Waker
	WakesForAllSaves() bool
}
