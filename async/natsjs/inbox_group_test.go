package natsjs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// TestHandlerContextGroup: handlers see their subscription's group in
// their context, and none for a private subscription.
func TestHandlerContextGroup(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{Logger: discardLogger()})
	type seen struct {
		group string
		ok    bool
	}
	grouped, private := make(chan seen, 1), make(chan seen, 1)
	handler := func(ch chan seen) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, _ async.IncomingMessage) error {
			g, ok := async.GroupFromContext(ctx)
			select {
			case ch <- seen{g, ok}:
			default:
			}
			return nil
		})
	}
	subscribe(t, sub, topic, handler(grouped), async.GroupName("billing"))
	subscribe(t, sub, topic, handler(private))
	publishAll(t, js, topic, async.NewMessage(topic, "M", nil))
	if s := recv(t, grouped, 10*time.Second, "the grouped delivery"); s != (seen{"billing", true}) {
		t.Errorf("grouped subscription: GroupFromContext = %q, %v; want billing, true", s.group, s.ok)
	}
	if s := recv(t, private, 10*time.Second, "the private delivery"); s.ok {
		t.Errorf("private subscription: GroupFromContext = %q, true; want no group", s.group)
	}
}

// TestInboxGroupMismatch: a handler on the billing inbox subscribed as
// shipping never processes a message: each fails with ErrGroupMismatch
// (logged at ERROR once), is redelivered and dead-lettered with that
// error; the billing subscription works as before.
func TestInboxGroupMismatch(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	observed := make(chan natsjs.DeadLetter, 10)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{
		Logger:       discardLogger(),
		OnDeadLetter: func(dl natsjs.DeadLetter) { observed <- dl },
	})
	store := memstore.New(memstore.Config{})
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))

	billing, miswired := make(chan string, 10), make(chan string, 10)
	record := func(ch chan string) async.MessageHandler {
		return async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
			ch <- m.ID()
			return nil
		})
	}
	opts := []async.SubscriberOption{async.MaxRedeliveries(1), async.RedeliveryDelay(10 * time.Millisecond)}
	subscribe(t, sub, topic, txm.InboxHandler(store.Inbox("billing"))(record(billing)), append(opts, async.GroupName("billing"))...)
	subscribe(t, sub, topic,
		txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{Logger: logger})(record(miswired)),
		append(opts, async.GroupName("shipping"))...)

	msgs := []async.Message{async.NewMessage(topic, "M", nil), async.NewMessage(topic, "M", nil)}
	publishAll(t, js, topic, msgs...)
	want := map[string]bool{msgs[0].ID(): true, msgs[1].ID(): true}
	for range msgs {
		if id := recv(t, billing, 10*time.Second, "billing's delivery"); !want[id] {
			t.Errorf("billing handled %s, want one of the published messages", id)
		}
	}
	for range msgs {
		dl := recv(t, observed, 10*time.Second, "a dead letter of the miswired subscription")
		if !want[dl.ID] || dl.Group != "shipping" || dl.Reason != natsjs.DeadLetterMaxDeliveries || dl.Deliveries != 2 ||
			!errors.Is(dl.HandlerErr, txm.ErrGroupMismatch) {
			t.Errorf("dead letter %s of group %q (%s, %d deliveries) with %v; want shipping's, after 2 deliveries, with ErrGroupMismatch",
				dl.ID, dl.Group, dl.Reason, dl.Deliveries, dl.HandlerErr)
		}
	}
	select {
	case id := <-miswired:
		t.Errorf("the miswired handler's next ran for %s, want never", id)
	default:
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

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
