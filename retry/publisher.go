package retry

import (
	"context"
	"errors"

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
// When next implements [async.AsyncPublisher], so does the returned
// publisher, and a relay keeps publishing through it in batches. Its
// PublishBatch publishes the batch, then again the messages that failed
// with an error that is not permanent, in their order, following p, until
// each is confirmed or failed for good; each message's result is what
// Publish would have returned for it. A failure of a whole call counts for
// every message of that call. Only an invalid p (nothing published) and a
// context done before the first call fail the whole batch.
func Publisher(p Policy) async.MessagePublisherMiddleware {
	return func(next async.MessagePublisher) async.MessagePublisher {
		r := retryingPublisher{p: p, next: next}
		if apub, ok := next.(async.AsyncPublisher); ok {
			return retryingBatchPublisher{retryingPublisher: r, apub: apub}
		}
		return r
	}
}

type retryingPublisher struct {
	p    Policy
	next async.MessagePublisher
}

func (r retryingPublisher) Publish(ctx context.Context, topicName string, msg async.Message) error {
	return Do(ctx, r.p, func(ctx context.Context) error {
		return r.next.Publish(ctx, topicName, msg)
	})
}

// retryingBatchPublisher is a retryingPublisher of an AsyncPublisher.
type retryingBatchPublisher struct {
	retryingPublisher
	apub async.AsyncPublisher
}

var errNoResult = errors.New("retry: the publisher returned no result for the message")

func (r retryingBatchPublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	errs := make([]error, len(msgs))
	pending := make([]int, len(msgs)) // the messages not settled yet
	for i := range pending {
		pending[i] = i
	}
	send := make([]async.Message, 0, len(msgs))
	err := Do(ctx, r.p, func(ctx context.Context) error {
		send = send[:0]
		for _, i := range pending {
			send = append(send, msgs[i])
		}
		res, err := r.apub.PublishBatch(ctx, send)
		if err != nil {
			for _, i := range pending {
				errs[i] = err
			}
			return err
		}
		still := pending[:0]
		for j, i := range pending {
			errs[i] = errNoResult
			if j < len(res) {
				errs[i] = res[j]
			}
			if errs[i] != nil && !IsPermanent(errs[i]) {
				still = append(still, i)
			}
		}
		pending = still
		if len(pending) == 0 {
			return nil
		}
		return errs[pending[0]]
	})
	if err == nil || IsPermanent(err) {
		// Every message is confirmed or failed for good; a permanent
		// failure of a whole call is each pending message's result.
		return errs, nil
	}
	rerr, ok := err.(*Error)
	if !ok || rerr.Attempts == 0 {
		return nil, err // an invalid policy, or a context done at once
	}
	for _, i := range pending {
		errs[i] = &Error{Attempts: rerr.Attempts, Last: errs[i], Reason: rerr.Reason}
	}
	return errs, nil
}
