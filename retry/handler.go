package retry

import (
	"context"
	"time"

	"github.com/transmanager/transmanager/async"
)

// Handler returns middleware that retries a failed HandleMessage in
// process, following p, before the error goes back to the subscriber (which
// then asks the broker for a redelivery). It stops as [Do] does: on success,
// on a permanent error, when p is exhausted or when the context is done,
// and returns the same errors. An invalid p makes every call fail with an
// error matching [ErrInvalidPolicy] without calling next.
//
// Permanent errors are returned unchanged, still marked permanent, and the
// message is left as it is: the middleware never settles a message itself.
// Whoever sees the error (an outer middleware or the subscriber) decides
// what a permanent failure means, for example Kill. A handler that settles
// the message itself before failing should return a permanent error, so it
// is not called again for a settled message.
//
// Before each wait the middleware calls the message's Extend, so that the
// broker does not redeliver the message while it is being retried here; an
// error from Extend is ignored (the retries go on, and at worst the broker
// redelivers the message). Keep p's total time well under the
// subscription's ack wait anyway, or bound it with MaxAttempts.
func Handler(p Policy) async.MessageHandlerMiddleware {
	return func(next async.MessageHandler) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			return DoNotify(ctx, p, func(ctx context.Context) error {
				return next.HandleMessage(ctx, msg)
			}, func(error, time.Duration) {
				_ = msg.Extend()
			})
		})
	}
}
