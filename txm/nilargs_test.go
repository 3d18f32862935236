package txm_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// TestNilArgumentsFailEveryCall checks that what the constructors build from
// a nil argument returns an error matching txm.ErrNilArgument, naming the
// argument, on every call, and never panics.
func TestNilArgumentsFailEveryCall(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	ok := func(context.Context, orderPlaced, async.IncomingMessage) error { return nil }
	var nilOutbox *memstore.Outbox
	var nilInbox *memstore.Inbox
	var nilPubFunc async.MessagePublisherFunc
	for _, tc := range []struct {
		name string
		arg  string // what the error must name
		call func() error
	}{
		{"NewOutbox(nil)", "publisher", func() error {
			return txm.NewOutbox[orderPlaced](nil).Publish(context.Background(), "orders", orderPlaced{ID: "1"})
		}},
		{"NewOutbox(nil func)", "publisher", func() error {
			return txm.NewOutbox[orderPlaced](nilPubFunc).Publish(context.Background(), "orders", orderPlaced{ID: "1"})
		}},
		{"NewOutbox(OutboxPublisher(nil))", "store", func() error {
			return txm.NewOutbox[orderPlaced](txm.OutboxPublisher(nil)(nil)).Publish(context.Background(), "orders", orderPlaced{ID: "1"})
		}},
		{"OutboxPublisher(typed nil)", "store", func() error {
			msg := async.NewMessage("orders", "Order", []byte("{}"))
			return txm.OutboxPublisher(nilOutbox)(nil).Publish(context.Background(), "orders", msg)
		}},
		{"NewInbox(nil)", "handler", func() error {
			return txm.NewInbox[orderPlaced](nil).HandleMessage(context.Background(), incoming(async.NewMessage("orders", "Order", []byte("{}"))))
		}},
		{"InboxHandler(nil)", "store", func() error {
			h := txm.InboxHandler(nil)(txm.NewInbox(ok))
			return h.HandleMessage(context.Background(), incoming(async.NewMessage("orders", "Order", []byte("{}"))))
		}},
		{"InboxHandler(typed nil)", "store", func() error {
			h := txm.InboxHandler(nilInbox)(txm.NewInbox(ok))
			return h.HandleMessage(context.Background(), incoming(async.NewMessage("orders", "Order", []byte("{}"))))
		}},
		{"InboxHandler(store)(nil)", "next", func() error {
			h := txm.InboxHandler(store.Inbox("billing"))(nil)
			return h.HandleMessage(context.Background(), incoming(async.NewMessage("orders", "Order", []byte("{}"))))
		}},
		{"NewOutboxProcessor(nil, store)", "publisher", func() error {
			return txm.NewOutboxProcessor(nil, store.Outbox()).Start(context.Background())
		}},
		{"NewOutboxProcessor(pub, nil)", "store", func() error {
			return txm.NewOutboxProcessor(newRecordingPublisher(), nil).Start(context.Background())
		}},
		{"NewOutboxProcessorWithConfig(pub, typed nil)", "store", func() error {
			_, err := txm.NewOutboxProcessorWithConfig(newRecordingPublisher(), nilOutbox, txm.ProcessorConfig{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for range 2 { // every call, not only the first
				var err error
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("panic: %v", p)
						}
					}()
					err = tc.call()
				}()
				if !errors.Is(err, txm.ErrNilArgument) {
					t.Fatalf("error = %v, want one matching txm.ErrNilArgument", err)
				}
				if !strings.Contains(err.Error(), tc.arg) {
					t.Errorf("error %q does not name the %s", err, tc.arg)
				}
			}
		})
	}
}

// TestNilMessageIsAnError checks that the handlers refuse a nil message
// instead of panicking.
func TestNilMessageIsAnError(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	h := txm.InboxHandler(store.Inbox("billing"))(txm.NewInbox(func(context.Context, orderPlaced, async.IncomingMessage) error { return nil }))
	if err := h.HandleMessage(context.Background(), nil); err == nil {
		t.Error("InboxHandler accepted a nil message")
	}
	if err := txm.NewInbox(func(context.Context, orderPlaced, async.IncomingMessage) error { return nil }).HandleMessage(context.Background(), nil); err == nil {
		t.Error("Inbox accepted a nil message")
	}
	if err := txm.OutboxPublisher(store.Outbox())(nil).Publish(context.Background(), "orders", nil); err == nil {
		t.Error("OutboxPublisher accepted a nil message")
	}
}
