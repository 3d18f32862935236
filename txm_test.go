package transmanager_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type OrderPlaced struct {
	OrderID string `json:"order_id" msgpack:"order_id"`
	Cents   int64  `json:"cents" msgpack:"cents"`
}

type Charged struct {
	OrderID string `json:"order_id"`
}

const (
	topicPlaced  = "orders.placed"
	topicCharged = "billing.charged"
)

// duplicating publishes every third message twice, as a relay does when a
// broker's confirmation is lost.
type duplicating struct {
	next async.MessagePublisher
	mu   sync.Mutex
	n    int
}

func (d *duplicating) Publish(ctx context.Context, topic string, msg async.Message) error {
	if err := d.next.Publish(ctx, topic, msg); err != nil {
		return err
	}
	d.mu.Lock()
	d.n++
	again := d.n%3 == 0
	d.mu.Unlock()
	if again {
		return d.next.Publish(ctx, topic, msg)
	}
	return nil
}

// TestEndToEnd drives the whole system through public APIs: a typed outbox
// saving in business transactions, the relay, the in-process broker and a
// typed consumer behind an inbox, with duplicates, a failing handler, a
// codec switch and a poison message. Every committed order must be charged
// exactly once in effect.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	store := memstore.New(memstore.Config{})
	broker := memory.New(memory.Config{RedeliveryDelay: 5 * time.Millisecond, MaxRedeliveries: 5})
	defer func() { _ = broker.Close() }()
	codecs := codec.NewRegistry(codec.JSON())
	save := txm.OutboxPublisher(store.Outbox())(nil)
	placed := txm.NewOutbox[OrderPlaced](save, txm.WithCodecs(codecs))
	charged := txm.NewOutbox[Charged](save, txm.WithCodecs(codecs))

	// Billing: charges each order once, writing its own event in the inbox
	// transaction. Its first attempt at order-003 fails.
	var mu sync.Mutex
	calls := map[string]int{}
	contentTypes := map[string]int{}
	var duplicates int
	bill := func(ctx context.Context, o OrderPlaced, msg async.IncomingMessage) error {
		mu.Lock()
		calls[o.OrderID]++
		first := calls[o.OrderID] == 1
		contentTypes[msg.Metadata().ContentType()]++
		mu.Unlock()
		if err := charged.Publish(ctx, topicCharged, Charged{OrderID: o.OrderID}); err != nil {
			return err
		}
		if o.OrderID == "order-003" && first {
			return errors.New("payment provider timeout")
		}
		return nil
	}
	handler := txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{
		OnDuplicate: func(context.Context, async.IncomingMessage) { mu.Lock(); duplicates++; mu.Unlock() },
	})(txm.NewInbox(bill, txm.WithCodecs(codecs)))
	sub, err := broker.Subscribe(ctx, topicPlaced, handler, async.GroupName("billing"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// The ledger sees the charges as they are published: distinct charge
	// message IDs per order.
	ledger := map[string]map[string]bool{}
	ledgerSub, err := broker.Subscribe(ctx, topicCharged, txm.NewInbox(func(_ context.Context, c Charged, msg async.IncomingMessage) error {
		mu.Lock()
		defer mu.Unlock()
		if ledger[c.OrderID] == nil {
			ledger[c.OrderID] = map[string]bool{}
		}
		ledger[c.OrderID][msg.ID()] = true
		return nil
	}, txm.WithCodecs(codecs)), async.GroupName("ledger"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ledgerSub.Unsubscribe() }()

	relay, err := txm.NewOutboxProcessorWithConfig(&duplicating{next: broker}, store.Outbox(), txm.ProcessorConfig{
		PollInterval: 10 * time.Millisecond,
		Retry:        retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Start(relayCtx) }()
	defer func() {
		stopRelay()
		if err := <-relayDone; err != nil {
			t.Errorf("relay Start returned %v", err)
		}
	}()

	// The order service: every fifth order's transaction rolls back; after
	// half the orders the topic moves from JSON to msgpack.
	const orders = 30
	var committed, rolledBack []string
	for i := 1; i <= orders; i++ {
		if i == orders/2+1 {
			if err := codecs.Register(topicPlaced, codec.Msgpack()); err != nil {
				t.Fatal(err)
			}
		}
		id := fmt.Sprintf("order-%03d", i)
		err := store.InTx(ctx, func(ctx context.Context) error {
			if err := placed.Publish(ctx, topicPlaced, OrderPlaced{OrderID: id, Cents: int64(i * 100)}, txm.WithPartitionKey(id)); err != nil {
				return err
			}
			if i%5 == 0 {
				return errors.New("out of stock")
			}
			return nil
		})
		if err != nil {
			rolledBack = append(rolledBack, id)
		} else {
			committed = append(committed, id)
		}
	}
	// A poison message: JSON content type, bytes that are not JSON, saved
	// on its own (no business change goes with it).
	poison := async.NewMessage(topicPlaced, "OrderPlaced", []byte("{not json"),
		async.WithMetadata(async.Metadata{async.MetaContentType: codec.ContentTypeJSON}))
	if err := save.Publish(txm.Standalone(ctx), topicPlaced, poison); err != nil {
		t.Fatal(err)
	}

	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range committed {
			if len(ledger[id]) == 0 {
				return false
			}
		}
		return len(broker.DeadLetters(topicPlaced)) >= 1
	}
	for !done() {
		select {
		case <-ctx.Done():
			t.Fatalf("the system did not settle: ledger %v, dead letters %d", ledger, len(broker.DeadLetters(topicPlaced)))
		case <-time.After(5 * time.Millisecond):
		}
	}
	// Let the relay publish anything still pending (nothing should be).
	stats, err := store.Outbox().Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, id := range committed {
		if n := len(ledger[id]); n != 1 {
			t.Errorf("%s charged %d times, want exactly once", id, n)
		}
	}
	for _, id := range rolledBack {
		if calls[id] != 0 || len(ledger[id]) != 0 {
			t.Errorf("rolled-back %s reached billing (%d calls, %d charges)", id, calls[id], len(ledger[id]))
		}
	}
	if calls["order-003"] != 2 {
		t.Errorf("order-003 handled %d times, want 2 (a failure, then the redelivery)", calls["order-003"])
	}
	if duplicates == 0 {
		t.Error("no duplicate reached the inbox: the test injected some")
	}
	if contentTypes[codec.ContentTypeJSON] == 0 || contentTypes[codec.ContentTypeMsgpack] == 0 {
		t.Errorf("content types handled = %v, want both JSON and msgpack", contentTypes)
	}
	// The poison may have been sent twice by the duplicating network: each
	// delivery is killed, none reaches billing.
	for _, d := range broker.DeadLetters(topicPlaced) {
		if d.Message.ID() != poison.ID() {
			t.Errorf("dead letter %s, want only the poison message %s", d.Message.ID(), poison.ID())
		}
	}
	if stats.Dead != 0 {
		t.Errorf("outbox has %d dead messages, want 0", stats.Dead)
	}
	t.Logf("%d committed, %d rolled back, %d duplicates absorbed, content types %v, outbox pending %d",
		len(committed), len(rolledBack), duplicates, contentTypes, stats.Pending)
}
