package retry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
)

// batchPublisher is a flakyPublisher that also publishes batches: fail
// gives the result of each message on each call (nil: confirmed), and
// callErr fails whole calls.
type batchPublisher struct {
	flakyPublisher
	mu      sync.Mutex
	sent    [][]string // the message names of each PublishBatch call
	fail    func(name string, call int) error
	callErr func(call int) error
}

func (p *batchPublisher) PublishBatch(_ context.Context, msgs []async.Message) ([]error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for _, m := range msgs {
		names = append(names, m.MessageName())
	}
	p.sent = append(p.sent, names)
	call := len(p.sent)
	if p.callErr != nil {
		if err := p.callErr(call); err != nil {
			return nil, err
		}
	}
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = p.fail(m.MessageName(), call)
	}
	return errs, nil
}

// TestPublisherKeepsBatchPublishing: over an AsyncPublisher, the retrying
// publisher is one too, and retries the failed messages of a batch only.
func TestPublisherKeepsBatchPublishing(t *testing.T) {
	t.Parallel()
	if _, ok := retry.Publisher(fast)(&flakyPublisher{}).(async.AsyncPublisher); ok {
		t.Error("over a plain publisher, the retrying publisher claims batch publishing")
	}

	bad := errors.New("rejected")
	next := &batchPublisher{fail: func(name string, call int) error {
		switch {
		case name == "b" && call <= 2:
			return fmt.Errorf("call %d: %w", call, errUnavailable)
		case name == "c":
			return retry.Permanent(bad)
		case name == "d":
			return errUnavailable
		}
		return nil
	}}
	p := fast
	p.MaxAttempts = 3
	pub, ok := retry.Publisher(p)(next).(async.AsyncPublisher)
	if !ok {
		t.Fatal("over an AsyncPublisher, the retrying publisher does not implement async.AsyncPublisher")
	}
	msgs := []async.Message{async.NewMessage("t", "a", nil), async.NewMessage("t", "b", nil), async.NewMessage("t", "c", nil), async.NewMessage("t", "d", nil)}
	errs, err := pub.PublishBatch(context.Background(), msgs)
	if err != nil || len(errs) != len(msgs) {
		t.Fatalf("PublishBatch() = %v, %v; want one result per message", errs, err)
	}
	if errs[0] != nil || errs[1] != nil {
		t.Errorf("results of a, b = %v, %v; want both confirmed", errs[0], errs[1])
	}
	if !retry.IsPermanent(errs[2]) || !errors.Is(errs[2], bad) {
		t.Errorf("result of c = %v, want its permanent error", errs[2])
	}
	var rerr *retry.Error
	if !errors.Is(errs[3], retry.ErrExhausted) || !errors.Is(errs[3], errUnavailable) || !errors.As(errs[3], &rerr) || rerr.Attempts != 3 {
		t.Errorf("result of d = %v, want an *retry.Error matching ErrExhausted and its error after 3 attempts", errs[3])
	}
	if got, want := fmt.Sprint(next.sent), "[[a b c d] [b d] [b d]]"; got != want {
		t.Errorf("batches sent %s, want %s (only the retryable failures again)", got, want)
	}
	if next.calls != 0 {
		t.Errorf("Publish called %d times, want batches only", next.calls)
	}

	// A failed call counts for each of its messages.
	whole := &batchPublisher{
		fail: func(string, int) error { return nil },
		callErr: func(call int) error {
			if call == 1 {
				return errUnavailable
			}
			return nil
		},
	}
	errs, err = retry.Publisher(fast)(whole).(async.AsyncPublisher).PublishBatch(context.Background(), msgs[:2])
	if err != nil || len(errs) != 2 || errs[0] != nil || errs[1] != nil || len(whole.sent) != 2 {
		t.Errorf("PublishBatch() = %v, %v after %d calls; want both confirmed on the second call", errs, err, len(whole.sent))
	}

	// An invalid policy publishes nothing and fails the whole call.
	none := &batchPublisher{fail: func(string, int) error { return nil }}
	errs, err = retry.Publisher(retry.Policy{MaxAttempts: -1})(none).(async.AsyncPublisher).PublishBatch(context.Background(), msgs)
	if !errors.Is(err, retry.ErrInvalidPolicy) || errs != nil || len(none.sent) != 0 {
		t.Errorf("PublishBatch() = %v, %v after %d calls; want ErrInvalidPolicy and no call", errs, err, len(none.sent))
	}

	// A context done before the first call fails the whole call.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs, err = pub.PublishBatch(ctx, msgs)
	if !errors.Is(err, context.Canceled) || errs != nil {
		t.Errorf("PublishBatch() = %v, %v with a cancelled context; want context.Canceled", errs, err)
	}
}
