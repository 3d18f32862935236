package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cenkalti/backoff/v4"

	"github.com/transmanager/transmanager/retry"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	if retry.Permanent(nil) != nil {
		t.Fatal("Permanent(nil) != nil")
	}
	cause := fmt.Errorf("decode: %w", io.ErrUnexpectedEOF)
	err := retry.Permanent(cause)
	if errors.Unwrap(err) != cause {
		t.Errorf("Unwrap(Permanent(err)) = %v, want err", errors.Unwrap(err))
	}
	if err.Error() != cause.Error() {
		t.Errorf("Error() = %q, want %q", err, cause)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error("errors.Is does not see through the marker")
	}
	if again := retry.Permanent(err); again != err {
		t.Errorf("Permanent(Permanent(err)) = %#v, want the same error", again)
	}
	// backoff's own Retry stops on it too.
	calls := 0
	_ = backoff.Retry(func() error { calls++; return err }, &backoff.ZeroBackOff{})
	if calls != 1 {
		t.Errorf("backoff.Retry called the operation %d times, want 1", calls)
	}
}

func TestIsPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("base")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"retry.Permanent", retry.Permanent(base), true},
		{"backoff.Permanent", backoff.Permanent(base), true},
		{"backoff.PermanentError literal", &backoff.PermanentError{Err: base}, true},
		{"wrapped", fmt.Errorf("a: %w", fmt.Errorf("b: %w", retry.Permanent(base))), true},
		{"joined", errors.Join(base, retry.Permanent(io.EOF)), true},
		{"formatted without %w", fmt.Errorf("a: %v", retry.Permanent(base)), false},
		{"exhausted", &retry.Error{Attempts: 3, Last: base, Reason: retry.ErrExhausted}, false},
	}
	for _, tt := range tests {
		if got := retry.IsPermanent(tt.err); got != tt.want {
			t.Errorf("%s: IsPermanent(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestError(t *testing.T) {
	t.Parallel()
	last := errors.New("connection refused")
	tests := []struct {
		name string
		err  *retry.Error
		text string
		is   []error
	}{
		{
			"exhausted", &retry.Error{Attempts: 3, Last: last, Reason: retry.ErrExhausted},
			"retry: stopped after 3 attempts (retry: policy exhausted): connection refused",
			[]error{retry.ErrExhausted, last},
		},
		{
			"one attempt", &retry.Error{Attempts: 1, Last: last, Reason: context.Canceled},
			"retry: stopped after 1 attempt (context canceled): connection refused",
			[]error{context.Canceled, last},
		},
		{
			"before the first attempt", &retry.Error{Reason: context.DeadlineExceeded},
			"retry: stopped before the first attempt (context deadline exceeded)",
			[]error{context.DeadlineExceeded},
		},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.text {
			t.Errorf("%s: Error() = %q, want %q", tt.name, got, tt.text)
		}
		for _, target := range tt.is {
			if !errors.Is(tt.err, target) {
				t.Errorf("%s: errors.Is(err, %v) = false", tt.name, target)
			}
		}
		if len(tt.err.Unwrap()) != len(tt.is) {
			t.Errorf("%s: Unwrap() = %v, want %d errors", tt.name, tt.err.Unwrap(), len(tt.is))
		}
	}
}
