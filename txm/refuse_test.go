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

// saveInTx publishes msg through pub inside a transaction of store, which
// the error of the publish rolls back, and returns that error.
func saveInTx(store *memstore.Store, pub async.MessagePublisher, msg async.Message) error {
	return store.InTx(context.Background(), func(ctx context.Context) error {
		return pub.Publish(ctx, msg.Subject(), msg)
	})
}

// assertSaved fails unless the store holds exactly n unpublished messages.
func assertSaved(t *testing.T, store *memstore.Store, n int) {
	t.Helper()
	got, err := store.Outbox().FindUnpublished(context.Background(), 100)
	if err != nil || len(got) != n {
		t.Errorf("FindUnpublished = %d messages, %v; want %d", len(got), err, n)
	}
}

// TestOutboxRefusesTooLargeMessages: a message above the outbox's maximum
// size is refused before anything is saved, with ErrMessageTooLarge.
func TestOutboxRefusesTooLargeMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		pub     func(txm.OutboxStore) async.MessagePublisher
		payload int
		md      async.Metadata
		refused bool
	}{
		{"default refuses 2 MiB", func(s txm.OutboxStore) async.MessagePublisher { return txm.OutboxPublisher(s)(nil) }, 2 << 20, nil, true},
		{"default refuses 1 MiB with the envelope", func(s txm.OutboxStore) async.MessagePublisher { return txm.OutboxPublisher(s)(nil) }, 1 << 20, nil, true},
		{"default accepts 512 KiB", func(s txm.OutboxStore) async.MessagePublisher { return txm.OutboxPublisher(s)(nil) }, 512 << 10, nil, false},
		{"a small limit", func(s txm.OutboxStore) async.MessagePublisher {
			return txm.OutboxPublisherWithConfig(s, txm.OutboxConfig{MaxMessageSize: 4096})(nil)
		}, 5000, nil, true},
		{"metadata counts", func(s txm.OutboxStore) async.MessagePublisher {
			return txm.OutboxPublisherWithConfig(s, txm.OutboxConfig{MaxMessageSize: 4096})(nil)
		}, 100, async.Metadata{"k": strings.Repeat("v", 4096)}, true},
		{"within a small limit", func(s txm.OutboxStore) async.MessagePublisher {
			return txm.OutboxPublisherWithConfig(s, txm.OutboxConfig{MaxMessageSize: 4096})(nil)
		}, 3000, async.Metadata{"k": "v"}, false},
		{"a negative limit checks nothing", func(s txm.OutboxStore) async.MessagePublisher {
			return txm.OutboxPublisherWithConfig(s, txm.OutboxConfig{MaxMessageSize: -1})(nil)
		}, 3 << 20, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := memstore.New(memstore.Config{})
			msg := async.NewMessage("orders", "Big", make([]byte, tc.payload), async.WithMetadata(tc.md))
			err := saveInTx(store, tc.pub(store.Outbox()), msg)
			if !tc.refused {
				if err != nil {
					t.Fatalf("Publish: %v, want nil", err)
				}
				assertSaved(t, store, 1)
				return
			}
			if !errors.Is(err, txm.ErrMessageTooLarge) {
				t.Fatalf("Publish: %v, want an error matching ErrMessageTooLarge", err)
			}
			if !strings.Contains(err.Error(), "bytes") || !strings.Contains(err.Error(), "maximum") {
				t.Errorf("error %q does not give the size and the limit", err)
			}
			assertSaved(t, store, 0)
		})
	}
}

// TestOutboxRefusesInvalidMetadata: metadata that cannot be a NATS or HTTP
// header is refused before anything is saved, with ErrInvalidMetadata.
func TestOutboxRefusesInvalidMetadata(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		md      async.Metadata
		refused bool
	}{
		{"space in a key", async.Metadata{"bad key": "v"}, true},
		{"colon in a key", async.Metadata{"a:b": "v"}, true},
		{"empty key", async.Metadata{"": "v"}, true},
		{"control character in a key", async.Metadata{"a\x01": "v"}, true},
		{"non-ASCII key", async.Metadata{"clé": "v"}, true},
		{"separator in a key", async.Metadata{"a/b": "v"}, true},
		{"line feed in a value", async.Metadata{"k": "a\nb"}, true},
		{"carriage return in a byte value", async.Metadata{"k": []byte("a\rb")}, true},
		{"valid keys and values", async.Metadata{"traceparent": "00-x", "X-Custom_1.2~!": "a b: c", "n": 42, "raw": []byte("x")}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := memstore.New(memstore.Config{})
			err := saveInTx(store, txm.OutboxPublisher(store.Outbox())(nil), async.NewMessage("orders", "Test", nil, async.WithMetadata(tc.md)))
			if !tc.refused {
				if err != nil {
					t.Fatalf("Publish: %v, want nil", err)
				}
				assertSaved(t, store, 1)
				return
			}
			if !errors.Is(err, txm.ErrInvalidMetadata) {
				t.Fatalf("Publish: %v, want an error matching ErrInvalidMetadata", err)
			}
			assertSaved(t, store, 0)
		})
	}
}

// TestTypedOutboxRefusesAtSave: the typed Outbox on OutboxPublisher gets the
// same refusals.
func TestTypedOutboxRefusesAtSave(t *testing.T) {
	t.Parallel()
	type blob struct{ Data string }
	store := memstore.New(memstore.Config{})
	out := txm.NewOutbox[blob](txm.OutboxPublisher(store.Outbox())(nil))
	err := store.InTx(context.Background(), func(ctx context.Context) error {
		return out.Publish(ctx, "blobs", blob{Data: strings.Repeat("x", 2<<20)})
	})
	if !errors.Is(err, txm.ErrMessageTooLarge) {
		t.Errorf("Publish of 2 MiB: %v, want an error matching ErrMessageTooLarge", err)
	}
	err = store.InTx(context.Background(), func(ctx context.Context) error {
		return out.Publish(ctx, "blobs", blob{Data: "x"}, txm.WithHeaders(async.Metadata{"bad key": "v"}))
	})
	if !errors.Is(err, txm.ErrInvalidMetadata) {
		t.Errorf("Publish with a bad header: %v, want an error matching ErrInvalidMetadata", err)
	}
	assertSaved(t, store, 0)
	if err := store.InTx(context.Background(), func(ctx context.Context) error {
		return out.Publish(ctx, "blobs", blob{Data: "x"}, txm.WithHeaders(async.Metadata{"tenant": "a"}))
	}); err != nil {
		t.Fatalf("Publish of a valid message: %v", err)
	}
	assertSaved(t, store, 1)
}

// TestOutboxCheckDoesNotAllocate: the checks on the producer's path cost
// no allocation for a valid message.
func TestOutboxCheckDoesNotAllocate(t *testing.T) {
	pub := txm.OutboxPublisher(outboxSaveFunc(func(context.Context, async.Message) error { return nil }))(nil)
	msg := async.NewMessage("orders", "Test", make([]byte, 1024), async.WithMetadata(async.Metadata{
		async.MetaContentType: "application/json", "traceparent": "00-abc-def-01", "raw": []byte("x"),
	}))
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if err := pub.Publish(ctx, "orders", msg); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Publish allocates %v times per message, want 0", n)
	}
}
