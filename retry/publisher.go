package retry

import (
	"context"

	"github.com/transmanager/transmanager/async"
)

// Publisher returns middleware that retries a failed Publish following p,
// as [Do] does: until it succeeds, fails with a permanent error (returned
// as it is, still permanent), exhausts p (an [*Error] matching
// [ErrExhausted] and the last error) or the context is done (an [*Error]
// matching ctx.Err() and the last error). An invalid p makes every Publish
// fail with an error matching [ErrInvalidPolicy] without calling next.
//
// Every retry publishes the same message, with the same ID, so a broker
// that deduplicates by ID absorbs a publish that succeeded but whose
// confirmation was lost.
//
// The returned publisher implements only [async.MessagePublisher]: it hides
// an [async.AsyncPublisher] capability of next, so a relay publishes
// through it one message at a time.
func Publisher(p Policy) async.MessagePublisherMiddleware {
	return func(next async.MessagePublisher) async.MessagePublisher {
		return async.MessagePublisherFunc(func(ctx context.Context, topicName string, msg async.Message) error {
			return Do(ctx, p, func(ctx context.Context) error {
				return next.Publish(ctx, topicName, msg)
			})
		})
	}
}
