package memory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/brokertest"
	"github.com/transmanager/transmanager/async/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("fresh broker per test", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		brokers := map[string]*memory.Broker{}
		brokertest.Run(t, brokertest.Harness{
			New: func(t *testing.T) (async.MessagePublisher, async.MessageSubscriber) {
				b := newBroker(t, memory.Config{})
				mu.Lock()
				defer mu.Unlock()
				brokers[t.Name()] = b
				return b, b
			},
			DeadLetters: func(t *testing.T, topic string) []string {
				mu.Lock()
				b := brokers[t.Name()]
				mu.Unlock()
				return deadIDs(b, topic)
			},
		})
	})
	t.Run("one shared broker", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t, memory.Config{})
		brokertest.Run(t, brokertest.Harness{
			New: func(*testing.T) (async.MessagePublisher, async.MessageSubscriber) { return b, b },
			DeadLetters: func(_ *testing.T, topic string) []string {
				return deadIDs(b, topic)
			},
		})
	})
}

func deadIDs(b *memory.Broker, topic string) []string {
	var ids []string
	for _, dl := range b.DeadLetters(topic) {
		ids = append(ids, dl.Message.ID())
	}
	return ids
}

// newBroker returns a broker closed in t's cleanup.
func newBroker(t *testing.T, cfg memory.Config) *memory.Broker {
	t.Helper()
	b := memory.New(cfg)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// sink collects deliveries on a channel.
type sink chan async.IncomingMessage

func (s sink) handler(fn func(async.IncomingMessage) error) async.MessageHandler {
	return async.MessageHandlerFunc(func(_ context.Context, msg async.IncomingMessage) error {
		s <- msg
		if fn == nil {
			return nil
		}
		return fn(msg)
	})
}

// next returns the next delivery or fails after a bounded wait.
func (s sink) next(t *testing.T) async.IncomingMessage {
	t.Helper()
	select {
	case msg := <-s:
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
		return nil
	}
}

// none checks that nothing arrives during d.
func (s sink) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case msg := <-s:
		t.Fatalf("unexpected delivery of %s (%q)", msg.ID(), msg.Data())
	case <-time.After(d):
	}
}

func subscribe(t *testing.T, b *memory.Broker, topic string, h async.MessageHandler, opts ...async.SubscriberOption) async.Subscription {
	t.Helper()
	sub, err := b.Subscribe(t.Context(), topic, h, opts...)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

func publish(t *testing.T, b *memory.Broker, topic string, msgs ...async.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := b.Publish(t.Context(), topic, m); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
}

func TestCloseWaitsForHandlers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// block is the in-flight handler's wait; release ends it from the
		// test.
		block func(ctx context.Context, release <-chan struct{}) error
		// released: the test must release the handler for Close to return.
		released bool
	}{
		{
			name: "handler ignoring its context",
			block: func(_ context.Context, release <-chan struct{}) error {
				<-release
				return nil
			},
			released: true,
		},
		{
			name: "handler honouring its context",
			block: func(ctx context.Context, _ <-chan struct{}) error {
				<-ctx.Done()
				return ctx.Err()
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := memory.New(memory.Config{})
			started := make(chan struct{})
			release := make(chan struct{})
			var returned atomic.Bool
			_, err := b.Subscribe(t.Context(), "t", async.MessageHandlerFunc(func(ctx context.Context, _ async.IncomingMessage) error {
				close(started)
				err := tc.block(ctx, release)
				returned.Store(true)
				return err
			}))
			if err != nil {
				t.Fatal(err)
			}
			publish(t, b, "t", async.NewMessage("t", "M", nil))
			<-started

			closed := make(chan error, 1)
			go func() { closed <- b.Close() }()
			if tc.released {
				select {
				case err := <-closed:
					close(release)
					t.Fatalf("Close returned (%v) while a handler was in flight", err)
				case <-time.After(50 * time.Millisecond):
				}
				close(release)
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not return within 5s")
			}
			if !returned.Load() {
				t.Error("Close returned before the handler did")
			}
		})
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	b := memory.New(memory.Config{})
	sub, err := b.Subscribe(t.Context(), "t", async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cases := []struct {
		name string
		call func() error
		want error // nil: the call must succeed
	}{
		{"Publish", func() error { return b.Publish(t.Context(), "t", async.NewMessage("t", "M", nil)) }, async.ErrClosed},
		{"Subscribe", func() error {
			_, err := b.Subscribe(t.Context(), "t", async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil }))
			return err
		}, async.ErrClosed},
		{"Close again", b.Close, nil},
		{"Unsubscribe after Close", sub.Unsubscribe, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("got %v, want an error matching %v", err, tc.want)
			}
		})
	}
}

func TestSettleAfterClose(t *testing.T) {
	t.Parallel()
	b := memory.New(memory.Config{})
	got := make(sink, 1)
	held := make(chan async.IncomingMessage, 1)
	_, err := b.Subscribe(t.Context(), "t", got.handler(func(msg async.IncomingMessage) error {
		held <- msg
		return msg.NAck()
	}))
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, "t", async.NewMessage("t", "M", nil))
	got.next(t)
	msg := <-held
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := msg.Ack(); err != nil {
		t.Errorf("Ack after Close: %v", err)
	}
	if err := msg.Extend(); !errors.Is(err, async.ErrClosed) {
		t.Errorf("Extend after Close: %v, want an error matching async.ErrClosed", err)
	}
}

func TestInvalidCalls(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{})
	h := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil })
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	cases := []struct {
		name string
		call func() error
		is   error // also checked with errors.Is when not nil
	}{
		{"Publish nil message", func() error { return b.Publish(t.Context(), "t", nil) }, nil},
		{"Publish empty topic", func() error { return b.Publish(t.Context(), "", async.NewMessage("", "M", nil)) }, nil},
		{"Publish cancelled", func() error { return b.Publish(cancelled, "t", async.NewMessage("t", "M", nil)) }, context.Canceled},
		{"Subscribe nil handler", func() error { _, err := b.Subscribe(t.Context(), "t", nil); return err }, nil},
		{"Subscribe empty topic", func() error { _, err := b.Subscribe(t.Context(), "", h); return err }, nil},
		{"Subscribe cancelled", func() error { _, err := b.Subscribe(cancelled, "t", h); return err }, context.Canceled},
		{"Subscribe negative concurrency", func() error { _, err := b.Subscribe(t.Context(), "t", h, async.Concurrency(-2)); return err }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("got nil, want an error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("got %v, want an error matching %v", err, tc.is)
			}
		})
	}
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	boom := errors.New("boom")
	cases := []struct {
		name      string
		group     string
		opts      []async.SubscriberOption
		handle    func(async.IncomingMessage) error
		wantCount int // deliveries before the dead letter
		reason    []string
		// handlerErr checks DeadLetter.HandlerErr; nil wants nil.
		handlerErr func(error) bool
	}{
		{
			name:      "killed",
			group:     "billing",
			handle:    func(m async.IncomingMessage) error { return m.Kill() },
			wantCount: 1,
			reason:    []string{"killed"},
		},
		{
			name:      "killed in a private group",
			handle:    func(m async.IncomingMessage) error { return m.Kill() },
			wantCount: 1,
			reason:    []string{"killed"},
		},
		{
			name:       "handler errors past MaxRedeliveries",
			group:      "billing",
			opts:       []async.SubscriberOption{async.MaxRedeliveries(2), async.RedeliveryDelay(time.Millisecond)},
			handle:     func(async.IncomingMessage) error { return fmt.Errorf("charge card: %w", boom) },
			wantCount:  3,
			reason:     []string{"exceeded 2 redeliveries", "handler error: charge card: boom"},
			handlerErr: func(err error) bool { return errors.Is(err, boom) },
		},
		{
			name:  "killed by a handler that then fails",
			group: "billing",
			handle: func(m async.IncomingMessage) error {
				if err := m.Kill(); err != nil {
					return err
				}
				return fmt.Errorf("decode: %w", boom)
			},
			wantCount:  1,
			reason:     []string{"killed"},
			handlerErr: func(err error) bool { return errors.Is(err, boom) && err.Error() == "decode: boom" },
		},
		{
			name:      "panics past MaxRedeliveries",
			group:     "billing",
			opts:      []async.SubscriberOption{async.MaxRedeliveries(1), async.RedeliveryDelay(time.Millisecond)},
			handle:    func(async.IncomingMessage) error { panic("nil map") },
			wantCount: 2,
			reason:    []string{"exceeded 1 redeliveries", "handler error: panic: nil map"},
			handlerErr: func(err error) bool {
				var perr *async.PanicError
				return errors.As(err, &perr) && perr.Value == "nil map" && strings.Contains(string(perr.Stack), "broker_test.go")
			},
		},
		{
			name:      "NAcks past MaxRedeliveries",
			group:     "billing",
			opts:      []async.SubscriberOption{async.MaxRedeliveries(1), async.RedeliveryDelay(time.Millisecond)},
			handle:    func(m async.IncomingMessage) error { return m.NAck() },
			wantCount: 2,
			reason:    []string{"exceeded 1 redeliveries", "nacked"},
		},
		{
			name:      "ack wait past MaxRedeliveries",
			opts:      []async.SubscriberOption{async.MaxRedeliveries(1), async.AckWait(20 * time.Millisecond), async.Concurrency(2)},
			handle:    nil, // blocks until the test ends, never settling
			wantCount: 2,
			reason:    []string{"exceeded 1 redeliveries", "ack wait expired"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, memory.Config{Now: func() time.Time { return at }})
			done := make(chan struct{})
			handle := tc.handle
			if handle == nil {
				handle = func(async.IncomingMessage) error { <-done; return nil }
			}
			got := make(sink, 10)
			opts := tc.opts
			if tc.group != "" {
				opts = append(opts, async.GroupName(tc.group))
			}
			subscribe(t, b, "orders", got.handler(handle), opts...)
			t.Cleanup(func() { close(done) }) // runs before Unsubscribe and Close
			msg := async.NewMessage("orders", "OrderPlaced", []byte("order 1"),
				async.WithMetadata(async.Metadata{async.MetaContentType: "text/plain"}))
			publish(t, b, "orders", msg)
			for range tc.wantCount {
				if d := got.next(t); d.ReceivedAt() != at {
					t.Errorf("ReceivedAt() = %v, want %v from Config.Now", d.ReceivedAt(), at)
				}
			}

			waitDead(t, b, "orders", 1)
			got.none(t, 50*time.Millisecond)
			dls := b.DeadLetters("orders")
			if len(dls) != 1 {
				t.Fatalf("got %d dead letters, want 1: %+v", len(dls), dls)
			}
			dl := dls[0]
			if dl.Message.ID() != msg.ID() || string(dl.Message.Data()) != "order 1" ||
				dl.Message.MessageName() != "OrderPlaced" || dl.Message.Metadata().ContentType() != "text/plain" {
				t.Errorf("dead letter message = %s %q %q %v, want the published one", dl.Message.ID(), dl.Message.MessageName(), dl.Message.Data(), dl.Message.Metadata())
			}
			if dl.Topic != "orders" || dl.Group != tc.group {
				t.Errorf("dead letter topic, group = %q, %q; want %q, %q", dl.Topic, dl.Group, "orders", tc.group)
			}
			if dl.Deliveries != tc.wantCount {
				t.Errorf("dead letter Deliveries = %d, want %d", dl.Deliveries, tc.wantCount)
			}
			for _, part := range tc.reason {
				if !strings.Contains(dl.Reason, part) {
					t.Errorf("dead letter Reason = %q, want it to contain %q", dl.Reason, part)
				}
			}
			if tc.handlerErr == nil && dl.HandlerErr != nil || tc.handlerErr != nil && !tc.handlerErr(dl.HandlerErr) {
				t.Errorf("dead letter HandlerErr = %v, unexpected", dl.HandlerErr)
			}
			if strings.Contains(dl.Reason, "\n") {
				t.Errorf("dead letter Reason = %q, want one line", dl.Reason)
			}
			if !dl.At.Equal(at) {
				t.Errorf("dead letter At = %v, want %v from Config.Now", dl.At, at)
			}
			// DeadLetters returns copies.
			dl.Message.Metadata().Set(async.MetaContentType, "changed")
			if again := b.DeadLetters("orders"); again[0].Message.Metadata().ContentType() != "text/plain" {
				t.Error("changing a returned dead letter changed the broker's")
			}
			if other := b.DeadLetters("payments"); other != nil {
				t.Errorf("DeadLetters of another topic = %v, want nil", other)
			}
		})
	}
}
