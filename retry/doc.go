// Package retry holds the retry policies of transmanager, built on
// github.com/cenkalti/backoff/v4: a [Policy] value type, the [Do] loop,
// [Permanent] errors, and middleware that retries publishers and handlers.
//
// # Policies
//
// A [Policy] is an exponential backoff with jitter and optional limits. Its
// zero value is usable and equals [DefaultPolicy]: 100ms after the first
// failure, doubling up to 30s, ±50% jitter, and no limit on attempts or
// time. The absence of a time limit is deliberate: backoff's own
// ExponentialBackOff gives up after 15 minutes by default, which would make
// a relay drop messages during a long broker outage.
//
// A Policy serves two kinds of callers:
//
//   - Stateless schedulers, such as the relay that stores each message's
//     next attempt time, use [Policy.Delay] (the delay after failure n) and
//     [Policy.Exhausted] (whether n attempts use up MaxAttempts).
//   - Loops use [Do] or [DoNotify], or get a backoff.BackOff from
//     [Policy.NewBackOff] (with an injected clock from
//     [Policy.NewBackOffClock]). A BackOff is not safe for concurrent use:
//     make one per loop; the Policy itself may be shared freely.
//
// MaxAttempts counts every attempt, the first included: a Policy with
// MaxAttempts 3 calls the operation at most three times.
//
// # Errors
//
// An operation marks an error that retrying cannot fix with [Permanent];
// [Do] then stops at once and returns that error, and [IsPermanent] (which
// also recognises backoff.Permanent) still reports it. When Do gives up
// otherwise, it returns an [*Error] that matches both the reason
// ([ErrExhausted] or the context's error) and the last error of the
// operation with errors.Is.
//
// # Middleware
//
// [Publisher] retries a [async.MessagePublisher] and [Handler] retries a
// [async.MessageHandler] in process; both follow Do's rules. Chain them
// with [async.ChainPublisher] and [async.ChainHandler].
package retry
