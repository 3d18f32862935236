package retry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
)

// flakyPublisher fails its first failures calls with err, then succeeds.
type flakyPublisher struct {
	mu       sync.Mutex
	failures int
	err      error
	calls    int
	topics   []string
	ids      []string
}

func (p *flakyPublisher) Publish(_ context.Context, topic string, msg async.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.topics = append(p.topics, topic)
	p.ids = append(p.ids, msg.ID())
	if p.calls <= p.failures {
		return fmt.Errorf("attempt %d: %w", p.calls, p.err)
	}
	return nil
}

var errUnavailable = errors.New("broker unavailable")

func TestPublisher(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		failures  int
		err       error
		wantCalls int
		check     func(error) bool
	}{
		{"success", 0, errUnavailable, 1, func(err error) bool { return err == nil }},
		{"fails twice then succeeds", 2, errUnavailable, 3, func(err error) bool { return err == nil }},
		{"succeeds on the last attempt", 4, errUnavailable, 5, func(err error) bool { return err == nil }},
		{"exhausted", 10, errUnavailable, 5, func(err error) bool {
			return errors.Is(err, retry.ErrExhausted) && errors.Is(err, errUnavailable) && !retry.IsPermanent(err)
		}},
		{"permanent", 10, retry.Permanent(errUnavailable), 1, func(err error) bool {
			return retry.IsPermanent(err) && errors.Is(err, errUnavailable) && !errors.Is(err, retry.ErrExhausted)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			next := &flakyPublisher{failures: tt.failures, err: tt.err}
			p := fast
			p.MaxAttempts = 5
			pub := async.ChainPublisher(next, retry.Publisher(p))
			msg := async.NewMessage("orders", "OrderPlaced", []byte("{}"))
			err := pub.Publish(context.Background(), "orders", msg)
			if !tt.check(err) {
				t.Errorf("Publish() = %v", err)
			}
			if next.calls != tt.wantCalls {
				t.Errorf("next called %d times, want %d", next.calls, tt.wantCalls)
			}
			for i := range next.calls {
				if next.topics[i] != "orders" || next.ids[i] != msg.ID() {
					t.Errorf("call %d published %s to %q, want %s to orders", i+1, next.ids[i], next.topics[i], msg.ID())
				}
			}
		})
	}
}

func TestPublisherContextCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
		cancel()
		return errUnavailable
	})
	pub := retry.Publisher(retry.Policy{InitialInterval: time.Hour})(next)
	err := pub.Publish(ctx, "t", async.NewMessage("t", "T", nil))
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errUnavailable) {
		t.Fatalf("Publish() = %v, want Canceled and the publisher's error", err)
	}
}

func TestPublisherInvalidPolicy(t *testing.T) {
	t.Parallel()
	next := &flakyPublisher{}
	err := retry.Publisher(retry.Policy{MaxAttempts: -1})(next).Publish(context.Background(), "t", async.NewMessage("t", "T", nil))
	if !errors.Is(err, retry.ErrInvalidPolicy) || next.calls != 0 {
		t.Fatalf("Publish() = %v with %d calls, want ErrInvalidPolicy and no call", err, next.calls)
	}
}

func TestPublisherConcurrent(t *testing.T) {
	t.Parallel()
	next := &flakyPublisher{failures: 20, err: errUnavailable}
	pub := retry.Publisher(fast)(next)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := pub.Publish(context.Background(), "t", async.NewMessage("t", "T", nil)); err != nil {
				t.Errorf("Publish() = %v", err)
			}
		})
	}
	wg.Wait()
	if next.calls != 24 {
		t.Errorf("next called %d times, want 20 failures + 4 successes", next.calls)
	}
}
