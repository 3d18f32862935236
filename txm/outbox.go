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
func OutboxPublisher(store OutboxStore) async.MessagePublisherMiddleware {
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
