package retry

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults used for the zero fields of a [Policy].
const (
	// DefaultInitialInterval is the delay after the first failure.
	DefaultInitialInterval = 100 * time.Millisecond
	// DefaultMaxInterval caps the growing interval.
	DefaultMaxInterval = 30 * time.Second
	// DefaultMultiplier is the growth factor from one interval to the next.
	DefaultMultiplier = 2.0
	// DefaultRandomizationFactor is the jitter: each delay is drawn from
	// [interval*(1-f), interval*(1+f)].
	DefaultRandomizationFactor = 0.5
)

// NoJitter is a [Policy.RandomizationFactor] that turns jitter off: every
// delay is exactly the computed interval. Any negative value does the same.
const NoJitter = -1.0

// Policy describes an exponential backoff: the delay after failure n is
// InitialInterval * Multiplier^(n-1), capped at MaxInterval, with jitter
// given by RandomizationFactor. MaxAttempts and MaxElapsedTime bound how long
// [Do] keeps trying.
//
// The zero value is usable and equals [DefaultPolicy]: 100ms, doubling, up
// to 30s, ±50% jitter, retrying forever. Policy is a comparable value type
// with no state; every method may be called concurrently. A Policy that
// [Policy.Validate] rejects is still usable by [Policy.Delay],
// [Policy.NewBackOff] and [Policy.Exhausted], which treat each rejected
// field as if it were zero (its default), but [Do] and the middleware
// return the validation error.
type Policy struct {
	// InitialInterval is the delay after the first failure, before jitter.
	// 0 means DefaultInitialInterval (100ms). Must not be negative.
	InitialInterval time.Duration

	// MaxInterval caps the interval as it grows. Jitter is applied after
	// the cap (as backoff.ExponentialBackOff does), so a single delay can
	// reach MaxInterval*(1+RandomizationFactor). 0 means
	// DefaultMaxInterval (30s), or InitialInterval when that is longer.
	// Must not be negative, nor (when set) shorter than InitialInterval.
	MaxInterval time.Duration

	// Multiplier is the growth factor from one interval to the next. 0
	// means DefaultMultiplier (2); 1 gives a constant interval. Must be a
	// finite number not below 1 when set.
	Multiplier float64

	// RandomizationFactor is the jitter: a delay with interval d is drawn
	// uniformly from [d*(1-f), d*(1+f)]. 0 means
	// DefaultRandomizationFactor (0.5); a negative value, such as
	// [NoJitter], means no jitter at all. Must not exceed 1.
	RandomizationFactor float64

	// MaxAttempts bounds the number of attempts, counting the first one:
	// MaxAttempts 3 means one call and at most two retries. 0 means no
	// limit. Must not be negative.
	MaxAttempts int

	// MaxElapsedTime bounds the time spent retrying: a retry that would
	// start later than MaxElapsedTime after the first attempt is not made.
	// 0 means NO limit. This is deliberate: backoff.ExponentialBackOff
	// defaults to 15 minutes, which would make a relay or a consumer
	// silently give up during a longer broker outage, so a Policy never
	// inherits that default. Must not be negative.
	MaxElapsedTime time.Duration
}

// DefaultPolicy returns the policy that the zero Policy stands for, with
// every default spelled out: 100ms initial interval, multiplier 2, 30s
// maximum interval, randomization factor 0.5, no attempt limit and no time
// limit.
func DefaultPolicy() Policy {
	return Policy{
		InitialInterval:     DefaultInitialInterval,
		MaxInterval:         DefaultMaxInterval,
		Multiplier:          DefaultMultiplier,
		RandomizationFactor: DefaultRandomizationFactor,
	}
}

// Validate reports the first invalid field of p, naming it. The error
// matches [ErrInvalidPolicy].
func (p Policy) Validate() error {
	switch {
	case p.InitialInterval < 0:
		return invalid("InitialInterval must not be negative, got %v", p.InitialInterval)
	case p.MaxInterval < 0:
		return invalid("MaxInterval must not be negative, got %v", p.MaxInterval)
	case p.MaxInterval > 0 && p.MaxInterval < p.withDefaults().InitialInterval:
		return invalid("MaxInterval (%v) must not be shorter than InitialInterval (%v)",
			p.MaxInterval, p.withDefaults().InitialInterval)
	case p.Multiplier != 0 && !(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 1):
		return invalid("Multiplier must be a finite number of at least 1, got %v", p.Multiplier)
	case p.RandomizationFactor > 1 || math.IsNaN(p.RandomizationFactor):
		return invalid("RandomizationFactor must not exceed 1, got %v", p.RandomizationFactor)
	case p.MaxAttempts < 0:
		return invalid("MaxAttempts must not be negative, got %d", p.MaxAttempts)
	case p.MaxElapsedTime < 0:
		return invalid("MaxElapsedTime must not be negative, got %v", p.MaxElapsedTime)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: Policy."+format, append([]any{ErrInvalidPolicy}, args...)...)
}

// withDefaults returns p with every zero or invalid field replaced by its
// default. The jitter it returns is 0 for "none".
func (p Policy) withDefaults() Policy {
	if p.InitialInterval <= 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = max(DefaultMaxInterval, p.InitialInterval)
	}
	p.MaxInterval = max(p.MaxInterval, p.InitialInterval)
	if !(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 1) {
		p.Multiplier = DefaultMultiplier
	}
	switch {
	case p.RandomizationFactor == 0 || math.IsNaN(p.RandomizationFactor):
		p.RandomizationFactor = DefaultRandomizationFactor
	case p.RandomizationFactor < 0:
		p.RandomizationFactor = 0
	case p.RandomizationFactor > 1:
		p.RandomizationFactor = 1
	}
	p.MaxAttempts = max(p.MaxAttempts, 0)
	p.MaxElapsedTime = max(p.MaxElapsedTime, 0)
	return p
}

// Interval returns the delay before retry number attempt without jitter:
// InitialInterval * Multiplier^(attempt-1), capped at MaxInterval. It
// returns 0 when attempt is below 1 (the first attempt has no delay).
func (p Policy) Interval(attempt int) time.Duration {
	if attempt < 1 {
		return 0
	}
	q := p.withDefaults()
	d := float64(q.InitialInterval) * math.Pow(q.Multiplier, float64(attempt-1))
	if d >= float64(q.MaxInterval) || math.IsNaN(d) {
		return q.MaxInterval
	}
	return time.Duration(d)
}

// Delay returns the delay before retry number attempt: 1 is the delay after
// the first failure, n the delay after the n-th failure. It is
// [Policy.Interval] with jitter: drawn uniformly from
// [Interval*(1-f), Interval*(1+f)] where f is the randomization factor, and
// exactly Interval without jitter. It returns 0 when attempt is below 1.
//
// Delay keeps no state, so a relay can persist each message's next attempt
// time from the message's attempt count alone. It uses the top-level
// functions of math/rand/v2 and is safe for concurrent use.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Interval(attempt)
	f := p.withDefaults().RandomizationFactor
	if d == 0 || f == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 - f + 2*f*rand.Float64()))
}

// Exhausted reports whether attempts attempts use up the policy's
// MaxAttempts. It is always false when MaxAttempts is 0 (no limit).
func (p Policy) Exhausted(attempts int) bool {
	return p.MaxAttempts > 0 && attempts >= p.MaxAttempts
}

// NewBackOff returns a new backoff.BackOff that follows p on the system
// clock. See [Policy.NewBackOffClock].
func (p Policy) NewBackOff() backoff.BackOff {
	return p.NewBackOffClock(backoff.SystemClock)
}

// NewBackOffClock returns a new backoff.BackOff that follows p, measuring
// MaxElapsedTime on clock (nil means the system clock). Its NextBackOff
// returns the same intervals as [Policy.Delay] for retries 1, 2, 3 and so
// on, and backoff.Stop once MaxAttempts attempts were made (MaxAttempts-1
// retries, as backoff.WithMaxRetries(b, MaxAttempts-1)) or the next retry
// would start after MaxElapsedTime.
//
// Every call returns a fresh instance that shares nothing with the others.
// An instance is not safe for concurrent use: use one per retry loop.
func (p Policy) NewBackOffClock(clock backoff.Clock) backoff.BackOff {
	if clock == nil {
		clock = backoff.SystemClock
	}
	q := p.withDefaults()
	b := &backoff.ExponentialBackOff{
		InitialInterval:     q.InitialInterval,
		RandomizationFactor: q.RandomizationFactor,
		Multiplier:          q.Multiplier,
		MaxInterval:         q.MaxInterval,
		// Set on purpose, 0 included: the package default of 15 minutes
		// would make long-running loops give up.
		MaxElapsedTime: q.MaxElapsedTime,
		Stop:           backoff.Stop,
		Clock:          clock,
	}
	b.Reset()
	if q.MaxAttempts > 0 {
		return backoff.WithMaxRetries(b, uint64(q.MaxAttempts-1))
	}
	return b
}
