package retry

import (
	"errors"
	"fmt"

	"github.com/cenkalti/backoff/v4"
)

// ErrInvalidPolicy is matched by the errors of [Policy.Validate], and so by
// the error [Do] and the middleware return for an invalid policy. Check it
// with errors.Is.
var ErrInvalidPolicy = errors.New("retry: invalid policy")

// ErrExhausted is matched by the error [Do] returns when the policy ran out
// of attempts (MaxAttempts) or time (MaxElapsedTime). Check it with
// errors.Is; the same error also matches the last error of the operation.
var ErrExhausted = errors.New("retry: policy exhausted")

// Error is the error [Do] returns when it stops retrying before the
// operation succeeded, other than on a permanent error: the policy was
// exhausted ([ErrExhausted]) or the context was done. errors.Is and
// errors.As see both Reason and Last:
//
//	errors.Is(err, retry.ErrExhausted)   // ran out of attempts or time
//	errors.Is(err, context.Canceled)     // the context was cancelled
//	errors.Is(err, io.ErrUnexpectedEOF)  // the last attempt failed so
type Error struct {
	// Attempts is how many times the operation ran.
	Attempts int
	// Last is the error of the last attempt; nil when the context was done
	// before the first attempt.
	Last error
	// Reason is why retrying stopped: [ErrExhausted], or the context's
	// error (context.Canceled or context.DeadlineExceeded).
	Reason error
}

// Error describes the attempts, the reason and the last error.
func (e *Error) Error() string {
	if e.Last == nil {
		return fmt.Sprintf("retry: stopped before the first attempt (%v)", e.Reason)
	}
	plural := "s"
	if e.Attempts == 1 {
		plural = ""
	}
	return fmt.Sprintf("retry: stopped after %d attempt%s (%v): %v", e.Attempts, plural, e.Reason, e.Last)
}

// Unwrap returns Reason and Last (those that are not nil), so errors.Is and
// errors.As match either.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	for _, err := range []error{e.Reason, e.Last} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Permanent marks err as permanent: [Do] and the middleware of this package
// do not retry it, and the relay moves a message whose publish fails with it
// straight to dead letters (on stores that keep them). It returns nil for nil, and err itself when
// [IsPermanent](err) already holds.
//
// The marked error has err's text and unwraps to err, so errors.Is and
// errors.As still find err and what it wraps. The marker is a
// *backoff.PermanentError, so backoff.Retry also stops on it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	if IsPermanent(err) {
		return err
	}
	return backoff.Permanent(err)
}

// IsPermanent reports whether err, or any error it wraps, was marked with
// [Permanent] or backoff.Permanent.
func IsPermanent(err error) bool {
	var pe *backoff.PermanentError
	return errors.As(err, &pe)
}
