package txm_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// panickingPublisher panics on the calls panics says to, and otherwise
// confirms every message, reporting each on published.
type panickingPublisher struct {
	mu        sync.Mutex
	calls     int
	panics    func(call int) bool
	published chan string
}

func (p *panickingPublisher) call() {
	p.mu.Lock()
	p.calls++
	n := p.calls
	p.mu.Unlock()
	if p.panics(n) {
		panic("publisher bug")
	}
}

func (p *panickingPublisher) Publish(_ context.Context, _ string, msg async.Message) error {
	p.call()
	p.published <- msg.ID()
	return nil
}

// batchPanickingPublisher is a panickingPublisher with batch publishing.
type batchPanickingPublisher struct{ *panickingPublisher }

func (p batchPanickingPublisher) PublishBatch(_ context.Context, msgs []async.Message) ([]error, error) {
	p.call()
	for _, m := range msgs {
		p.published <- m.ID()
	}
	return make([]error, len(msgs)), nil
}

// panicObserver records the errors of failed attempts.
type panicObserver struct {
	*observer
	mu      sync.Mutex
	retried map[string]error
}

func (o *panicObserver) Retried(m async.Message, attempts int, err error) {
	o.mu.Lock()
	o.retried[m.ID()] = err
	o.mu.Unlock()
	o.observer.Retried(m, attempts, err)
}

// TestRelayRecoversPublisherPanic: a publisher that panics fails the
// attempt of the messages it was publishing (every message of a batch
// call), which are retried and, when it keeps panicking, dead-lettered with
// the panic's value and stack; the relay keeps running.
func TestRelayRecoversPublisherPanic(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		name := "Publish"
		if batch {
			name = "PublishBatch"
		}
		newPub := func(panics func(int) bool) async.MessagePublisher {
			p := &panickingPublisher{panics: panics, published: make(chan string, 10)}
			if batch {
				return batchPanickingPublisher{p}
			}
			return p
		}
		published := func(pub async.MessagePublisher) chan string {
			if b, ok := pub.(batchPanickingPublisher); ok {
				return b.published
			}
			return pub.(*panickingPublisher).published
		}
		isPanic := func(err error) bool {
			var perr *async.PanicError
			return errors.As(err, &perr) && perr.Value == "publisher bug" && strings.Contains(string(perr.Stack), "panic_test.go")
		}

		t.Run(name+"/once", func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			store := memstore.New(memstore.Config{})
			msgs := []async.Message{async.NewMessage("orders", "T", nil), async.NewMessage("orders", "T", nil)}
			for _, m := range msgs {
				if err := store.Outbox().Save(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			pub := newPub(func(call int) bool { return call == 1 })
			obs := &panicObserver{observer: newObserver(), retried: map[string]error{}}
			stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Workers: 1, Retry: fastRetry, Observer: obs}))
			got := map[string]bool{}
			for len(got) < len(msgs) {
				select {
				case id := <-published(pub):
					got[id] = true
				case <-time.After(5 * time.Second):
					t.Fatalf("published %v within 5s, want all of %d messages after the panic", got, len(msgs))
				}
			}
			stop()
			obs.mu.Lock()
			defer obs.mu.Unlock()
			failed := 0
			for _, m := range msgs {
				if err, ok := obs.retried[m.ID()]; ok {
					failed++
					if !isPanic(err) {
						t.Errorf("message %s retried after %v, want a *async.PanicError with the value and stack", m.ID(), err)
					}
				}
			}
			// One publish call panicked: it held one message, or the
			// whole batch.
			if want := map[bool]int{false: 1, true: len(msgs)}[batch]; failed != want {
				t.Errorf("%d messages failed an attempt, want %d", failed, want)
			}
		})

		t.Run(name+"/always", func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			store := memstore.New(memstore.Config{})
			msg := async.NewMessage("orders", "T", nil)
			if err := store.Outbox().Save(ctx, msg); err != nil {
				t.Fatal(err)
			}
			obs := newObserver()
			stop := startRelay(t, newRelay(t, newPub(func(int) bool { return true }), store.Outbox(), txm.ProcessorConfig{
				Retry:    retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, RandomizationFactor: -1, MaxAttempts: 2},
				Observer: obs,
			}))
			select {
			case <-obs.deadCh:
			case <-time.After(5 * time.Second):
				t.Fatal("a message whose publisher always panics did not go to dead letters")
			}
			stop()
			dead, err := store.Outbox().DeadLetters(ctx, txm.DeadLetterFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) != 1 || dead[0].Attempts != 2 || !strings.Contains(dead[0].LastError, "panic: publisher bug") ||
				!strings.Contains(dead[0].LastError, "panic_test.go") {
				t.Fatalf("dead letters %+v, want the message after 2 attempts with the panic's value and stack", dead)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if err := obs.dead[msg.ID()]; !isPanic(err) {
				t.Errorf("Dead observed %v, want a *async.PanicError", err)
			}
		})
	}
}
