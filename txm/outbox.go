package txm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/transmanager/transmanager/async"
)

// OutboxPublisher creates a new MessagePublisherMiddleware using the
// provided OutboxStore. The middleware ensures that messages are saved to the
// OutboxStore before they are published. This is a critical step in
// guaranteeing that messages are not lost in the event of a failure during
// the publication process.
//
// If the Save operation detects a duplicate message, it is silently
// acknowledged to maintain idempotency and prevent duplicate message delivery.
//
// The publisher returned saves the message through store.Save, inside the
// transaction carried by ctx when the store supports one, and returns. It
// does not call next: publishing before the caller's transaction commits
// would leak the messages of transactions that roll back. The relay
// ([NewOutboxProcessor]) publishes saved messages with the real publisher
// after commit. When topicName differs from msg.Subject(), the message is
// saved under topicName.
//
// With a nil store, every Publish returns an error matching
// [ErrNilArgument]. next may be nil: it is never called.
//
// Before saving, it refuses, with nothing saved, a message the relay could
// never deliver: metadata that cannot be a header, or a delivery time or
// expiry it cannot read ([ErrInvalidMetadata]), and a message larger than [DefaultMaxMessageSize] ([ErrMessageTooLarge]).
// [OutboxPublisherWithConfig] sets another limit.
//
// It also refuses, with an error matching [ErrNoTransaction] and nothing
// saved, a Publish whose ctx carries no transaction of the store: such a
// save would commit on its own, so a business change that rolls back would
// leave its event behind. The check needs the store to implement
// [TxReporter] (memstore's and sqlstore's outboxes do); a store that does
// not cannot tell and saves as before. A standalone save is allowed when
// ctx was marked by [Standalone] or with [OutboxConfig.AllowStandalone].
func OutboxPublisher(store OutboxStore) async.MessagePublisherMiddleware {
	return OutboxPublisherWithConfig(store, OutboxConfig{})
}

// OutboxConfig configures the publisher built by
// [OutboxPublisherWithConfig]. The zero value is the configuration of
// [OutboxPublisher].
type OutboxConfig struct {
	// MaxMessageSize is the largest message the outbox saves, in bytes; a
	// larger one fails with an error matching [ErrMessageTooLarge] and is
	// not saved. A message's size counts its payload, its ID and name, its
	// metadata as headers (each key and value plus 4 bytes) and 84 bytes
	// for the JetStream envelope's own headers: at least what the
	// JetStream publisher sends, so a saved message fits a server whose
	// max_payload is MaxMessageSize. 0 uses [DefaultMaxMessageSize]
	// (1 MiB, NATS's default max_payload); a negative value checks no
	// size. Metadata is checked whatever the value ([ErrInvalidMetadata]).
	MaxMessageSize int

	// AllowStandalone lets every Publish save without a transaction in its
	// context: a save outside a transaction commits on its own, as
	// [Standalone] allows for one call. Default false: such a Publish
	// fails with an error matching [ErrNoTransaction] on a store that
	// implements [TxReporter].
	AllowStandalone bool
}

// ErrNoTransaction is matched by the error of a Publish through
// [OutboxPublisher] (and so of [Outbox.Publish] on it) whose context
// carries no transaction of the store, typically a forgotten
// sqlstore.WithPgxTx, sqlstore.WithTx or store.InTx. Nothing is saved: the
// outbox exists to commit the event with the business change, and a save
// that committed on its own would survive the change's rollback. Mark the
// context with [Standalone] (or set [OutboxConfig.AllowStandalone]) for a
// save that is meant to commit on its own. Only stores that implement
// [TxReporter] can be checked. Checked with errors.Is.
var ErrNoTransaction = errors.New("txm: no transaction in the context")

type standaloneKey struct{}

// Standalone returns a copy of ctx that allows a Publish through
// [OutboxPublisher] to save without a transaction: the message is saved
// durably and committed at once, on its own, instead of failing with
// [ErrNoTransaction]. Use it for an event that announces no business
// change of the same database. A transaction ctx carries is still used:
// Standalone allows a save outside a transaction, it does not leave one.
func Standalone(ctx context.Context) context.Context {
	return context.WithValue(ctx, standaloneKey{}, true)
}

// isStandalone reports whether ctx was marked by [Standalone].
func isStandalone(ctx context.Context) bool {
	ok, _ := ctx.Value(standaloneKey{}).(bool)
	return ok
}

// OutboxPublisherWithConfig is [OutboxPublisher] with a configuration: the
// same middleware, refusing messages larger than cfg.MaxMessageSize and,
// unless cfg.AllowStandalone, saves outside a transaction.
func OutboxPublisherWithConfig(store OutboxStore, cfg OutboxConfig) async.MessagePublisherMiddleware {
	maxSize := cfg.MaxMessageSize
	if maxSize == 0 {
		maxSize = DefaultMaxMessageSize
	}
	var nilStore error
	var reporter TxReporter
	if isNil(store) {
		nilStore = nilArgument("OutboxPublisher", "store")
	} else if r, ok := store.(TxReporter); ok && !cfg.AllowStandalone {
		reporter = r
	}
	return func(next async.MessagePublisher) async.MessagePublisher {
		return async.MessagePublisherFunc(func(ctx context.Context, topicName string, msg async.Message) error {
			if nilStore != nil {
				return nilStore
			}
			if isNil(msg) {
				return errors.New("txm: outbox: nil message")
			}
			if reporter != nil && !reporter.InTransaction(ctx) && !isStandalone(ctx) {
				return fmt.Errorf("txm: outbox: message %s: %w: publish inside the store's InTx or pass your transaction (sqlstore.WithPgxTx, sqlstore.WithTx); mark a save meant to commit on its own with txm.Standalone(ctx)",
					msg.ID(), ErrNoTransaction)
			}
			if err := checkMessage(msg, maxSize); err != nil {
				return err
			}
			if topicName != "" && topicName != msg.Subject() {
				msg = retopic{Message: msg, topic: topicName}
			}
			if err := store.Save(ctx, msg); err != nil {
				if errors.Is(err, ErrDuplicateMessage("")) {
					return nil
				}
				return fmt.Errorf("txm: outbox: save message %s: %w", msg.ID(), err)
			}
			return nil
		})
	}
}

// retopic is a message saved under another topic than its own Subject.
type retopic struct {
	async.Message
	topic string
}

func (m retopic) Subject() string { return m.topic }

// SentAt is forwarded explicitly so the wrapper reads as a full message.
func (m retopic) SentAt() time.Time { return m.Message.SentAt() }
