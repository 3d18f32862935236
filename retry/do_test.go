package retry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/transmanager/transmanager/retry"
)

// fast retries at once, without jitter.
var fast = retry.Policy{InitialInterval: time.Microsecond, MaxInterval: time.Microsecond, RandomizationFactor: retry.NoJitter}

// failing returns an operation that fails n times, with errors "fail 1",
// "fail 2"..., then succeeds, and a pointer to its call count.
func failing(n int) (func(context.Context) error, *int) {
	calls := 0
	return func(context.Context) error {
		calls++
		if calls <= n {
			return fmt.Errorf("fail %d", calls)
		}
		return nil
	}, &calls
}

// waitErr waits for an error on ch, failing the test after a deadline.
func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Do did not return")
		return nil
	}
}

func TestDoAttempts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		maxAttempts int
		failures    int
		wantCalls   int
		wantErr     bool
	}{
		{"success at once", 0, 0, 1, false},
		{"success after failures, no limit", 0, 50, 51, false},
		{"success on the last allowed attempt", 3, 2, 3, false},
		{"exhausted", 3, 3, 3, true},
		{"exhausted, many failures", 3, 100, 3, true},
		{"single attempt", 1, 1, 1, true},
		{"single attempt succeeds", 1, 0, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := fast
			p.MaxAttempts = tt.maxAttempts
			fn, calls := failing(tt.failures)
			err := retry.Do(context.Background(), p, fn)
			if *calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d", *calls, tt.wantCalls)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("Do() = %v, want error: %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, retry.ErrExhausted) {
				t.Errorf("Do() = %v, does not match ErrExhausted", err)
			}
			var rerr *retry.Error
			if !errors.As(err, &rerr) {
				t.Fatalf("Do() = %T, want *retry.Error", err)
			}
			if rerr.Attempts != tt.wantCalls {
				t.Errorf("Error.Attempts = %d, want %d", rerr.Attempts, tt.wantCalls)
			}
			if want := fmt.Sprintf("fail %d", tt.wantCalls); rerr.Last == nil || rerr.Last.Error() != want {
				t.Errorf("Error.Last = %v, want the last error %q", rerr.Last, want)
			}
			if !errors.Is(err, rerr.Last) {
				t.Errorf("errors.Is(err, last) = false")
			}
		})
	}
}

func TestDoNotifyDelays(t *testing.T) {
	t.Parallel()
	p := retry.Policy{
		InitialInterval:     10 * time.Microsecond,
		MaxInterval:         160 * time.Microsecond,
		RandomizationFactor: retry.NoJitter,
		MaxAttempts:         10,
	}
	var delays []time.Duration
	var errs []string
	fn, calls := failing(100)
	err := retry.DoNotify(context.Background(), p, fn, func(err error, next time.Duration) {
		errs = append(errs, err.Error())
		delays = append(delays, next)
	})
	if !errors.Is(err, retry.ErrExhausted) || *calls != 10 {
		t.Fatalf("Do() = %v after %d calls, want ErrExhausted after 10", err, *calls)
	}
	us := time.Microsecond
	want := []time.Duration{10 * us, 20 * us, 40 * us, 80 * us, 160 * us, 160 * us, 160 * us, 160 * us, 160 * us}
	if !slices.Equal(delays, want) {
		t.Errorf("notified delays = %v, want %v (growing, then capped)", delays, want)
	}
	// Notify sees every failure but the last, which ends the loop.
	wantErrs := []string{"fail 1", "fail 2", "fail 3", "fail 4", "fail 5", "fail 6", "fail 7", "fail 8", "fail 9"}
	if !slices.Equal(errs, wantErrs) {
		t.Errorf("notified errors = %v, want %v", errs, wantErrs)
	}
}

func TestDoNotifyJitteredDelays(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: 10 * time.Microsecond, MaxInterval: 80 * time.Microsecond, MaxAttempts: 8}
	var delays []time.Duration
	fn, _ := failing(100)
	_ = retry.DoNotify(context.Background(), p, fn, func(_ error, next time.Duration) { delays = append(delays, next) })
	if len(delays) != 7 {
		t.Fatalf("%d delays, want 7", len(delays))
	}
	for i, d := range delays {
		iv := float64(p.Interval(i + 1))
		if lo, hi := time.Duration(iv*0.5), time.Duration(iv*1.5)+1; d < lo || d > hi {
			t.Errorf("delay %d = %v, outside [%v, %v]", i+1, d, lo, hi)
		}
	}
}

func TestDoPermanent(t *testing.T) {
	t.Parallel()
	cause := errors.New("bad request")
	tests := []struct {
		name string
		err  error
	}{
		{"retry.Permanent", retry.Permanent(cause)},
		{"backoff.Permanent", backoff.Permanent(cause)},
		{"wrapped", fmt.Errorf("publish: %w", retry.Permanent(cause))},
		{"joined", errors.Join(errors.New("other"), retry.Permanent(cause))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			var notified bool
			err := retry.DoNotify(context.Background(), fast, func(context.Context) error {
				calls++
				return tt.err
			}, func(error, time.Duration) { notified = true })
			if calls != 1 || notified {
				t.Errorf("calls = %d, notified = %v; want one call and no retry", calls, notified)
			}
			if err != tt.err {
				t.Errorf("Do() = %v, want the error fn returned, %v", err, tt.err)
			}
			if !errors.Is(err, cause) {
				t.Errorf("errors.Is(err, cause) = false")
			}
			if !retry.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false", err)
			}
			if errors.Is(err, retry.ErrExhausted) {
				t.Errorf("a permanent error matches ErrExhausted")
			}
		})
	}
	// Unwrapped from the marker: the text is the cause's, and one Unwrap
	// gives the cause.
	err := retry.Do(context.Background(), fast, func(context.Context) error { return retry.Permanent(cause) })
	if err.Error() != cause.Error() || errors.Unwrap(err) != cause {
		t.Errorf("Do() = %q (unwraps to %v), want the text and cause %q", err, errors.Unwrap(err), cause)
	}
}

func TestDoPermanentAfterFailures(t *testing.T) {
	t.Parallel()
	cause := errors.New("gone")
	calls := 0
	err := retry.Do(context.Background(), fast, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("transient")
		}
		return retry.Permanent(cause)
	})
	if calls != 3 || !errors.Is(err, cause) || !retry.IsPermanent(err) {
		t.Fatalf("Do() = %v after %d calls, want the permanent error after 3", err, calls)
	}
}

func TestDoContextCancelDuringWait(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	last := errors.New("broker down")
	p := retry.Policy{InitialInterval: time.Hour, RandomizationFactor: retry.NoJitter}
	waiting := make(chan time.Duration, 1)
	done := make(chan error, 1)
	calls := 0
	go func() {
		done <- retry.DoNotify(ctx, p, func(context.Context) error {
			calls++
			return last
		}, func(_ error, next time.Duration) { waiting <- next })
	}()
	select {
	case next := <-waiting:
		if next != time.Hour {
			t.Fatalf("next = %v, want 1h", next)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Do never started waiting")
	}
	cancel()
	start := time.Now()
	err := waitErr(t, done)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Do took %v to return after cancel", took)
	}
	if !errors.Is(err, context.Canceled) || !errors.Is(err, last) {
		t.Fatalf("Do() = %v, want it to match context.Canceled and the last error", err)
	}
	if errors.Is(err, retry.ErrExhausted) {
		t.Errorf("Do() = %v matches ErrExhausted after a cancel", err)
	}
	var rerr *retry.Error
	if !errors.As(err, &rerr) || rerr.Attempts != 1 || calls != 1 {
		t.Fatalf("Do() = %#v after %d calls, want *retry.Error with 1 attempt", err, calls)
	}
}

func TestDoContextDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	last := errors.New("timeout talking to broker")
	done := make(chan error, 1)
	go func() {
		done <- retry.Do(ctx, retry.Policy{InitialInterval: time.Hour}, func(context.Context) error { return last })
	}()
	err := waitErr(t, done)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, last) {
		t.Fatalf("Do() = %v, want DeadlineExceeded and the last error", err)
	}
}

func TestDoContextDoneBeforeFirstAttempt(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err := retry.Do(ctx, fast, func(context.Context) error { called = true; return nil })
	if called {
		t.Error("fn was called with a done context")
	}
	var rerr *retry.Error
	if !errors.Is(err, context.Canceled) || !errors.As(err, &rerr) || rerr.Attempts != 0 || rerr.Last != nil {
		t.Fatalf("Do() = %#v, want *retry.Error{Attempts: 0, Reason: context.Canceled}", err)
	}
	if got := err.Error(); got != "retry: stopped before the first attempt (context canceled)" {
		t.Errorf("Error() = %q", got)
	}
}

func TestDoContextCancelledDuringAttempt(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	last := errors.New("interrupted")
	calls := 0
	// With a one-hour interval, returning at all shows Do did not wait.
	err := retry.Do(ctx, retry.Policy{InitialInterval: time.Hour}, func(context.Context) error {
		calls++
		cancel()
		return last
	})
	if calls != 1 || !errors.Is(err, context.Canceled) || !errors.Is(err, last) {
		t.Fatalf("Do() = %v after %d calls, want Canceled and the last error after 1", err, calls)
	}
}

func TestDoPassesContext(t *testing.T) {
	t.Parallel()
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	err := retry.Do(ctx, fast, func(ctx context.Context) error {
		if ctx.Value(key{}) != "v" {
			return retry.Permanent(errors.New("fn did not get the caller's context"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDoMaxElapsedTime(t *testing.T) {
	t.Parallel()
	// The first retry would start an hour (±50%) in, past MaxElapsedTime.
	p := retry.Policy{InitialInterval: time.Hour, MaxElapsedTime: time.Second}
	fn, calls := failing(10)
	err := retry.Do(context.Background(), p, fn)
	if *calls != 1 || !errors.Is(err, retry.ErrExhausted) {
		t.Fatalf("Do() = %v after %d calls, want ErrExhausted after 1", err, *calls)
	}
}

func TestDoInvalidPolicy(t *testing.T) {
	t.Parallel()
	called := false
	err := retry.Do(context.Background(), retry.Policy{Multiplier: 0.5}, func(context.Context) error { called = true; return nil })
	if called || !errors.Is(err, retry.ErrInvalidPolicy) {
		t.Fatalf("Do() = %v, called = %v; want ErrInvalidPolicy without a call", err, called)
	}
}

func TestDoConcurrentSharedPolicy(t *testing.T) {
	t.Parallel()
	p := fast
	p.MaxAttempts = 5
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			fn, calls := failing(3)
			if err := retry.Do(context.Background(), p, fn); err != nil || *calls != 4 {
				t.Errorf("Do() = %v after %d calls, want nil after 4", err, *calls)
			}
		})
	}
	wg.Wait()
}
