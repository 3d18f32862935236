package memory_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// TestHandlerContextGroup: handlers see their subscription's group in
// their context, and none for a private subscription.
func TestHandlerContextGroup(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{})
	type seen struct {
		group string
		ok    bool
	}
	got := make(chan seen, 2)
	h := async.MessageHandlerFunc(func(ctx context.Context, _ async.IncomingMessage) error {
		g, ok := async.GroupFromContext(ctx)
		got <- seen{g, ok}
		return nil
	})
	subscribe(t, b, "t", h, async.GroupName("billing"))
	publish(t, b, "t", async.NewMessage("t", "M", nil))
	if s := <-got; s != (seen{"billing", true}) {
		t.Errorf("grouped subscription: GroupFromContext = %q, %v; want billing, true", s.group, s.ok)
	}
	subscribe(t, b, "u", h)
	publish(t, b, "u", async.NewMessage("u", "M", nil))
	if s := <-got; s.ok {
		t.Errorf("private subscription: GroupFromContext = %q, true; want no group", s.group)
	}
}

// TestInboxGroupMismatch: a handler on the billing inbox subscribed as
// shipping never processes a message: each fails with ErrGroupMismatch
// (logged at ERROR once), is redelivered and dead-lettered with that
// error; the billing subscription and the rightly wired shipping one work
// as before.
func TestInboxGroupMismatch(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{Logger: slog.New(slog.DiscardHandler), RedeliveryDelay: -1, MaxRedeliveries: 1})
	store := memstore.New(memstore.Config{})
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))

	billing, shipping := make(sink, 10), make(sink, 10)
	subscribe(t, b, "orders", txm.InboxHandler(store.Inbox("billing"))(billing.handler(nil)), async.GroupName("billing"))
	miswired := make(sink, 10)
	sub := subscribe(t, b, "orders",
		txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{Logger: logger})(miswired.handler(nil)),
		async.GroupName("shipping"))

	msgs := []async.Message{async.NewMessage("orders", "M", nil), async.NewMessage("orders", "M", nil)}
	publish(t, b, "orders", msgs...)
	for range msgs {
		billing.next(t)
	}
	waitDead(t, b, "orders", len(msgs))
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	// The rightly wired shipping handler processes what comes next.
	subscribe(t, b, "orders", txm.InboxHandler(store.Inbox("shipping"))(shipping.handler(nil)), async.GroupName("shipping"))
	after := async.NewMessage("orders", "M", nil)
	publish(t, b, "orders", after)
	billing.next(t)
	if got := shipping.next(t); got.ID() != after.ID() {
		t.Errorf("shipping got %s, want %s", got.ID(), after.ID())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if len(miswired) != 0 {
		t.Errorf("the miswired handler's next ran %d times, want never", len(miswired))
	}
	for _, dl := range b.DeadLetters("orders") {
		if dl.Group != "shipping" || !errors.Is(dl.HandlerErr, txm.ErrGroupMismatch) {
			t.Errorf("dead letter of group %q with %v; want shipping's, with ErrGroupMismatch", dl.Group, dl.HandlerErr)
		}
	}
	if n := len(b.DeadLetters("orders")); n != len(msgs) {
		t.Errorf("%d dead letters, want %d", n, len(msgs))
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if n := strings.Count(out, "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR records for %d refused deliveries, want one:\n%s", n, 2*len(msgs), out)
	}
	if !strings.Contains(out, "subscription_group=shipping") || !strings.Contains(out, "inbox_group=billing") {
		t.Errorf("the ERROR record does not name both groups:\n%s", out)
	}
}
