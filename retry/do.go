package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Do calls fn until it succeeds, following p. It is [DoNotify] without a
// notify function.
func Do(ctx context.Context, p Policy, fn func(ctx context.Context) error) error {
	return DoNotify(ctx, p, fn, nil)
}

// DoNotify calls fn until it returns nil, waiting between attempts as p
// says, and returns:
//
//   - nil as soon as fn returns nil;
//   - at once, the error fn returned when it is permanent ([IsPermanent]):
//     the very error fn returned, still marked permanent, whose text is the
//     cause's and which unwraps to the cause;
//   - an [*Error] matching [ErrExhausted] and fn's last error when p's
//     MaxAttempts or MaxElapsedTime is used up;
//   - an [*Error] matching ctx.Err() and fn's last error when ctx is done,
//     whether during a wait (which it cuts short) or during fn. When ctx is
//     done before the first attempt, fn is not called;
//   - an error matching [ErrInvalidPolicy] when p is invalid, without
//     calling fn.
//
// notify, when not nil, is called after each failure that will be retried,
// with fn's error and the delay before the next attempt; it is not called
// for the failure that ends the loop. It runs on the caller's goroutine.
//
// Each call uses its own backoff from [Policy.NewBackOff], so DoNotify may
// run concurrently with one Policy.
func DoNotify(ctx context.Context, p Policy, fn func(ctx context.Context) error, notify func(err error, next time.Duration)) error {
	if err := p.Validate(); err != nil {
		return err
	}
	b := p.NewBackOff()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var last error
	for attempts := 0; ; {
		if err := ctx.Err(); err != nil {
			return &Error{Attempts: attempts, Last: last, Reason: err}
		}
		last = fn(ctx)
		attempts++
		switch {
		case last == nil:
			return nil
		case IsPermanent(last):
			return last
		}
		if err := ctx.Err(); err != nil {
			return &Error{Attempts: attempts, Last: last, Reason: err}
		}
		next := b.NextBackOff()
		if next == backoff.Stop {
			return &Error{Attempts: attempts, Last: last, Reason: ErrExhausted}
		}
		if notify != nil {
			notify(last, next)
		}
		if timer == nil {
			timer = time.NewTimer(next)
		} else {
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			return &Error{Attempts: attempts, Last: last, Reason: ctx.Err()}
		case <-timer.C:
		}
	}
}
