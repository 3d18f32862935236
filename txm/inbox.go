package txm

import (
	"context"
	"errors"

	"github.com/transmanager/transmanager/async"
)

// InboxHandler returns a new instance of MessageHandlerMiddleware that uses
// the provided InboxStore to save incoming messages before passing them to
// the next handler in the chain. It ensures that duplicate messages are
// handled gracefully by acknowledging them without returning an error, thus
// preventing multiple processing of the same message.
//
// The middleware wraps around the next MessageHandler to intercept the call,
// perform operations on the message, and delegate the message to the next
// handler if appropriate.
//
// When the store implements [Transactor], the save and next run in one
// transaction: the context passed to next carries it, so the handler's own
// writes through the same store commit together with the inbox record, and
// when next returns an error the inbox record rolls back with them and the
// broker's redelivery is processed again. A store without Transactor keeps
// the record even when next fails, so a failed message is not processed
// again: use a transactional store where that matters.
//
// On a duplicate (an error matching [ErrDuplicateMessage]) the middleware
// acks the message and returns nil without calling next.
//
// With a nil store, or wrapped around a nil next, the handler returns an
// error matching [ErrNilArgument] for every message, without saving it or
// settling it.
func InboxHandler(store InboxStore) async.MessageHandlerMiddleware {
	return InboxHandlerWithConfig(store, InboxConfig{})
}

// InboxConfig configures [InboxHandlerWithConfig]. The zero value behaves
// as [InboxHandler].
type InboxConfig struct {
	// OnDuplicate, when set, is called for every duplicate the inbox
	// absorbs, for metrics or logs. It must be quick and safe for concurrent
	// use.
	OnDuplicate func(ctx context.Context, msg async.IncomingMessage)
}

// InboxHandlerWithConfig is [InboxHandler] with hooks.
func InboxHandlerWithConfig(store InboxStore, cfg InboxConfig) async.MessageHandlerMiddleware {
	var nilStore error
	if isNil(store) {
		nilStore = nilArgument("InboxHandler", "store")
	}
	return func(next async.MessageHandler) async.MessageHandler {
		err := nilStore
		if err == nil && isNil(next) {
			err = nilArgument("InboxHandler middleware", "next handler")
		}
		if err != nil {
			return async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return err })
		}
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			if isNil(msg) {
				return errNilMessage
			}
			duplicate := false
			handle := func(ctx context.Context) error {
				if err := store.Save(ctx, msg); err != nil {
					if errors.Is(err, ErrDuplicateMessage("")) {
						duplicate = true
						return nil
					}
					return err
				}
				return next.HandleMessage(ctx, msg)
			}
			var err error
			if tx, ok := store.(Transactor); ok {
				err = tx.InTx(ctx, handle)
			} else {
				err = handle(ctx)
			}
			if err != nil {
				return err
			}
			if duplicate {
				// The broker acks a handler's nil result as well; acking
				// here settles the delivery even for subscribers that do
				// not, and acks are idempotent.
				_ = msg.Ack()
				if cfg.OnDuplicate != nil {
					cfg.OnDuplicate(ctx, msg)
				}
			}
			return nil
		})
	}
}
