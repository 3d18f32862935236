package txm_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
)

// instantLocker is a store whose locked claims answer at once, with no
// message and the error it is given: the claim's result and the end of its
// transaction reach the relay at nearly the same moment.
type instantLocker struct {
	err    error
	claims atomic.Int32
}

func (s *instantLocker) Save(context.Context, async.Message) error { return nil }
func (s *instantLocker) FindUnpublished(context.Context, int) ([]async.Message, error) {
	return nil, nil
}
func (s *instantLocker) MarkPublished(context.Context, ...string) error { return nil }
func (s *instantLocker) Claim(context.Context, int, time.Duration) ([]txm.Claimed, error) {
	return nil, nil
}
func (s *instantLocker) ExtendClaims(context.Context, time.Duration, ...string) error { return nil }
func (s *instantLocker) ReleaseClaims(context.Context, ...string) error               { return nil }
func (s *instantLocker) MarkFailed(context.Context, string, time.Duration, string) error {
	return nil
}
func (s *instantLocker) InTx(ctx context.Context, fn func(context.Context) error) error {
	return fn(ctx)
}
func (s *instantLocker) ClaimLocked(context.Context, int, time.Duration) ([]txm.Claimed, error) {
	s.claims.Add(1)
	return nil, s.err
}

// errorLog keeps the error attribute of every record at level ERROR.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (h *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorLog) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *errorLog) WithGroup(string) slog.Handler                { return h }
func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	var err error = errors.New(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if e, ok := a.Value.Any().(error); ok && a.Key == "error" {
			err = e
		}
		return true
	})
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
	return nil
}

func (h *errorLog) all() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// An empty locked claim is an empty claim, however quickly its transaction
// ends, and a failed one keeps its error's identity.
func TestRelayLockedClaimOutcome(t *testing.T) {
	t.Parallel()
	cause := errors.New("claim refused")
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty", nil},
		{"failed", cause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := &instantLocker{err: tc.err}
			log := &errorLog{}
			cfg := txm.ProcessorConfig{LockClaims: true, PollInterval: 50 * time.Microsecond, Logger: slog.New(log)}
			want := int32(2000)
			if tc.err != nil {
				cfg.StoreRetry = retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}
				want = 20
			}
			stop := startRelay(t, newRelay(t, newRecordingPublisher(), store, cfg))
			waitFor(t, "claims", 30*time.Second, func() bool { return store.claims.Load() >= want })
			stop()
			errs := log.all()
			if tc.err == nil {
				if len(errs) > 0 {
					t.Fatalf("%d empty claims logged as failures, the first: %v", len(errs), errs[0])
				}
				return
			}
			if len(errs) == 0 {
				t.Fatal("no failed claim logged")
			}
			for _, err := range errs {
				if !errors.Is(err, cause) {
					t.Fatalf("logged %v, want an error matching %v", err, cause)
				}
			}
		})
	}
}
