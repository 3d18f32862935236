package txm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

func TestInboxHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("duplicate is acked without calling the handler", func(t *testing.T) {
		t.Parallel()
		store := memstore.New(memstore.Config{})
		calls := 0
		h := txm.InboxHandler(store.Inbox("billing"))(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
			calls++
			return nil
		}))
		m := async.NewMessage("orders", "Test", nil)
		first, second := incoming(m), incoming(m)
		if err := h.HandleMessage(ctx, first); err != nil {
			t.Fatal(err)
		}
		if err := h.HandleMessage(ctx, second); err != nil {
			t.Fatalf("duplicate delivery returned %v, want nil", err)
		}
		if calls != 1 {
			t.Errorf("handler called %d times, want 1", calls)
		}
		if second.acks != 1 || second.nacks != 0 {
			t.Errorf("duplicate acked %d times, nacked %d times; want acked once", second.acks, second.nacks)
		}
	})

	t.Run("failed handler rolls back the inbox record and is processed again", func(t *testing.T) {
		t.Parallel()
		store := memstore.New(memstore.Config{})
		boom := errors.New("database deadlock")
		calls, effects := 0, 0
		h := txm.InboxHandler(store.Inbox("billing"))(async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			calls++
			// The handler's own write joins the inbox transaction.
			if err := store.Outbox().Save(ctx, async.NewMessage("billing.charged", "Charged", nil)); err != nil {
				return err
			}
			if calls == 1 {
				return boom
			}
			effects++
			return nil
		}))
		m := async.NewMessage("orders", "Test", nil)
		if err := h.HandleMessage(ctx, incoming(m)); !errors.Is(err, boom) {
			t.Fatalf("first delivery = %v, want %v", err, boom)
		}
		if left, _ := store.Outbox().FindUnpublished(ctx, 10); len(left) != 0 {
			t.Fatalf("the failed handler's outbox write survived: %d messages", len(left))
		}
		if err := h.HandleMessage(ctx, incoming(m)); err != nil {
			t.Fatalf("redelivery = %v, want nil", err)
		}
		if err := h.HandleMessage(ctx, incoming(m)); err != nil {
			t.Fatalf("third delivery = %v, want nil", err)
		}
		if calls != 2 || effects != 1 {
			t.Errorf("handler calls = %d, effects = %d; want 2 calls, 1 effect", calls, effects)
		}
		if left, _ := store.Outbox().FindUnpublished(ctx, 10); len(left) != 1 {
			t.Errorf("outbox holds %d messages, want the one written by the successful handling", len(left))
		}
	})

	t.Run("groups each process the message", func(t *testing.T) {
		t.Parallel()
		store := memstore.New(memstore.Config{})
		calls := map[string]int{}
		for _, group := range []string{"billing", "shipping"} {
			h := txm.InboxHandler(store.Inbox(group))(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
				calls[group]++
				return nil
			}))
			m := async.NewMessage("orders", "Test", nil, async.WithID("same-id"))
			for range 2 {
				if err := h.HandleMessage(ctx, incoming(m)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if calls["billing"] != 1 || calls["shipping"] != 1 {
			t.Errorf("calls = %v, want one per group", calls)
		}
	})

	t.Run("store error is returned and the handler not called", func(t *testing.T) {
		t.Parallel()
		broken := errors.New("disk full")
		store := inboxFunc(func(context.Context, async.IncomingMessage) error { return broken })
		h := txm.InboxHandler(store)(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
			t.Error("handler called although the inbox save failed")
			return nil
		}))
		if err := h.HandleMessage(ctx, incoming(async.NewMessage("t", "T", nil))); !errors.Is(err, broken) {
			t.Errorf("HandleMessage = %v, want %v", err, broken)
		}
	})
}

type inboxFunc func(context.Context, async.IncomingMessage) error

func (f inboxFunc) Save(ctx context.Context, m async.IncomingMessage) error { return f(ctx, m) }

func TestOutboxPublisher(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	nextCalled := false
	next := async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
		nextCalled = true
		return nil
	})
	pub := txm.OutboxPublisher(store.Outbox())(next)
	m := async.NewMessage("orders", "Test", []byte("x"))
	if err := store.InTx(ctx, func(ctx context.Context) error {
		if err := pub.Publish(ctx, "orders.eu", m); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, "orders.eu", m); err != nil {
			t.Fatalf("duplicate publish = %v, want nil", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if nextCalled {
		t.Error("OutboxPublisher called next: it must only save, the relay publishes after commit")
	}
	got, err := store.Outbox().FindUnpublished(ctx, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("FindUnpublished = %d, %v; want 1 message", len(got), err)
	}
	if got[0].Subject() != "orders.eu" || got[0].ID() != m.ID() || string(got[0].Data()) != "x" {
		t.Errorf("saved %s %s %q, want the message under topic orders.eu", got[0].ID(), got[0].Subject(), got[0].Data())
	}
	broken := errors.New("closed")
	failing := txm.OutboxPublisher(outboxSaveFunc(func(context.Context, async.Message) error { return broken }))(nil)
	if err := failing.Publish(ctx, "t", m); !errors.Is(err, broken) {
		t.Errorf("Publish on a failing store = %v, want %v", err, broken)
	}
}

type outboxSaveFunc func(context.Context, async.Message) error

func (f outboxSaveFunc) Save(ctx context.Context, m async.Message) error { return f(ctx, m) }
func (outboxSaveFunc) FindUnpublished(context.Context, int) ([]async.Message, error) {
	return nil, nil
}
func (outboxSaveFunc) MarkPublished(context.Context, ...string) error { return nil }
