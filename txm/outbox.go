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
// never deliver: metadata that cannot be a header ([ErrInvalidMetadata])
// and a message larger than [DefaultMaxMessageSize] ([ErrMessageTooLarge]).
// [OutboxPublisherWithConfig] sets another limit.
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
}

// OutboxPublisherWithConfig is [OutboxPublisher] with a configuration: the
// same middleware, refusing messages larger than cfg.MaxMessageSize.
func OutboxPublisherWithConfig(store OutboxStore, cfg OutboxConfig) async.MessagePublisherMiddleware {
	maxSize := cfg.MaxMessageSize
	if maxSize == 0 {
		maxSize = DefaultMaxMessageSize
	}
	var nilStore error
	if isNil(store) {
		nilStore = nilArgument("OutboxPublisher", "store")
	}
	return func(next async.MessagePublisher) async.MessagePublisher {
		return async.MessagePublisherFunc(func(ctx context.Context, topicName string, msg async.Message) error {
			if nilStore != nil {
				return nilStore
			}
			if isNil(msg) {
				return errors.New("txm: outbox: nil message")
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
