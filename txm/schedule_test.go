package txm_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// scheduled returns a message of topic with the given partition key (none
// for "") and metadata.
func scheduled(topic, key string, md async.Metadata) async.Message {
	if key != "" {
		md[async.MetaPartitionKey] = key
	}
	return async.NewMessage(topic, "Test", []byte(key), async.WithMetadata(md))
}

// waitWaiter waits until the relay waits on the clock for exactly at.
func (c *manualClock) waitWaiter(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, "the relay to wait for "+at.String(), 10*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, w := range c.waiters {
			if w.at.Equal(at) {
				return true
			}
		}
		return false
	})
}

func saveAll(t *testing.T, store *memstore.Store, msgs ...async.Message) {
	t.Helper()
	err := store.InTx(context.Background(), func(ctx context.Context) error {
		for _, m := range msgs {
			if err := store.Outbox().Save(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestScheduleOptionsSetMetadata(t *testing.T) {
	t.Parallel()
	out := txm.NewOutbox[orderPlaced](async.MessagePublisherFunc(func(context.Context, string, async.Message) error { return nil }))
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	msg, err := out.Message("orders", orderPlaced{ID: "1"}, txm.WithDeliverAt(at), txm.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	md := msg.Metadata()
	if got, want := md.GetString(async.MetaDeliverAt), "2030-01-02T02:04:05.000000006Z"; got != want {
		t.Errorf("deliver-at = %q, want %q (UTC, nanoseconds)", got, want)
	}
	if exp, ok := md.ExpiresAt(); !ok || !exp.Equal(at.Add(time.Minute)) {
		t.Errorf("expires-at = %v %v, want the delivery time plus the TTL %v", exp, ok, at.Add(time.Minute))
	}
	before := time.Now()
	msg, err = out.Message("orders", orderPlaced{ID: "1"}, txm.WithDelay(time.Hour), txm.WithExpiresAt(before.Add(2*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := msg.Metadata().DeliverAt(); !ok || d.Before(before.Add(time.Hour)) || d.After(time.Now().Add(time.Hour)) {
		t.Errorf("WithDelay(1h): deliver-at %v, want an hour from now", d)
	}
	// A later option replaces an earlier one of the same field.
	msg, err = out.Message("orders", orderPlaced{}, txm.WithDeliverAt(at), txm.WithDelay(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msg.Metadata()[async.MetaDeliverAt]; ok {
		t.Errorf("WithDelay(0) after WithDeliverAt left a delivery time: %v", msg.Metadata())
	}
	msg, err = out.Message("orders", orderPlaced{})
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Metadata()) != 1 {
		t.Errorf("a message without scheduling options has metadata %v, want the content type only", msg.Metadata())
	}

	for name, opts := range map[string][]txm.PublishOption{
		"negative delay":          {txm.WithDelay(-time.Second)},
		"zero TTL":                {txm.WithTTL(0)},
		"negative TTL":            {txm.WithTTL(-time.Second)},
		"zero deliver-at":         {txm.WithDeliverAt(time.Time{})},
		"zero expires-at":         {txm.WithExpiresAt(time.Time{})},
		"expiry before delivery":  {txm.WithDeliverAt(at), txm.WithExpiresAt(at.Add(-time.Second))},
		"expiry at delivery time": {txm.WithDeliverAt(at), txm.WithExpiresAt(at)},
	} {
		if _, err := out.Message("orders", orderPlaced{}, opts...); !errors.Is(err, txm.ErrInvalidMetadata) {
			t.Errorf("%s: err = %v, want ErrInvalidMetadata", name, err)
		}
		if err := out.Publish(context.Background(), "orders", orderPlaced{}, opts...); !errors.Is(err, txm.ErrInvalidMetadata) {
			t.Errorf("%s: Publish err = %v, want ErrInvalidMetadata", name, err)
		}
	}
}

func TestOutboxPublisherRefusesBadScheduleMetadata(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	pub := txm.OutboxPublisher(store.Outbox())(nil)
	for name, md := range map[string]async.Metadata{
		"unparsable deliver-at": {async.MetaDeliverAt: "tomorrow"},
		"unparsable expires-at": {async.MetaExpiresAt: "2030-01-02 03:04:05"},
		"time value":            {async.MetaDeliverAt: time.Now()},
		"expiry before delivery": {
			async.MetaDeliverAt: async.FormatTime(time.Now().Add(time.Hour)),
			async.MetaExpiresAt: async.FormatTime(time.Now()),
		},
	} {
		msg := async.NewMessage("orders", "Placed", nil, async.WithMetadata(md))
		err := store.InTx(context.Background(), func(ctx context.Context) error { return pub.Publish(ctx, "orders", msg) })
		if !errors.Is(err, txm.ErrInvalidMetadata) {
			t.Errorf("%s: err = %v, want ErrInvalidMetadata", name, err)
		}
		// The store refuses it on its own as well.
		if err := store.Outbox().Save(context.Background(), msg); !errors.Is(err, txm.ErrInvalidMetadata) {
			t.Errorf("%s: memstore Save err = %v, want ErrInvalidMetadata", name, err)
		}
	}
	st, err := store.Outbox().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending+st.Scheduled != 0 {
		t.Errorf("stats %+v after refused saves, want nothing stored", st)
	}
}

// TestScheduledMessageWakesAnIdleRelay: the relay does not publish a
// scheduled message before its time and, with a poll interval longer than
// the delay, wakes for it exactly at that time (on the store's clock).
func TestScheduledMessageWakesAnIdleRelay(t *testing.T) {
	t.Parallel()
	clock := newManualClock(-1)
	store := memstore.New(memstore.Config{Now: clock.Now})
	pub := newRecordingPublisher()
	p := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Clock: clock, PollInterval: time.Hour})
	due := clock.Now().Add(20 * time.Minute)
	msg := scheduled("reminders", "", async.Metadata{async.MetaDeliverAt: async.FormatTime(due)})
	saveAll(t, store, msg)
	startRelay(t, p)
	clock.waitWaiter(t, due)
	if n := len(pub.publishedIDs()); n != 0 {
		t.Fatalf("%d messages published before the delivery time, want 0", n)
	}
	st, err := store.Outbox().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Scheduled != 1 || st.Pending != 0 || !st.OldestPending.IsZero() || !st.NextDue.Equal(due) {
		t.Errorf("stats before the time = %+v, want 1 scheduled due at %v, nothing pending", st, due)
	}
	clock.advance(20 * time.Minute)
	waitFor(t, "the scheduled publish", 10*time.Second, func() bool { return pub.publishedIDs()[msg.ID()] == 1 })
}

// TestScheduledMessageIsOutsideItsKeysSequence pins the ordering rule: a
// scheduled message neither holds back its key's later messages, while it
// waits or after it died, nor waits for its key's earlier ones.
func TestScheduledMessageIsOutsideItsKeysSequence(t *testing.T) {
	t.Parallel()
	clock := newManualClock(-1)
	store := memstore.New(memstore.Config{Now: clock.Now})
	pub := newRecordingPublisher()
	obs := newObserver()
	p := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Clock: clock, PollInterval: time.Hour, Observer: obs, Retry: fastRetry})
	due := clock.Now().Add(time.Minute)
	first := scheduled("orders", "k", async.Metadata{async.MetaDeliverAt: async.FormatTime(due)})
	later := keyed("orders", "k")
	saveAll(t, store, first, later)
	// The key's head fails for good: it parks the key, except for the
	// scheduled message, which is outside the sequence.
	head := keyed("orders", "h")
	sched := scheduled("orders", "h", async.Metadata{async.MetaDeliverAt: async.FormatTime(due)})
	pub.setFail(func(m async.Message, _ int) error {
		if m.ID() == head.ID() {
			return retry.Permanent(errors.New("poison"))
		}
		return nil
	})
	saveAll(t, store, head, sched)
	startRelay(t, p)
	waitFor(t, "the key's unscheduled message", 10*time.Second, func() bool { return pub.publishedIDs()[later.ID()] == 1 })
	<-obs.deadCh
	clock.waitWaiter(t, due)
	if got := pub.publishedIDs(); got[first.ID()] != 0 || got[sched.ID()] != 0 {
		t.Fatalf("scheduled messages published before their time: %v", got)
	}
	clock.advance(time.Minute)
	waitFor(t, "both scheduled messages", 10*time.Second, func() bool {
		got := pub.publishedIDs()
		return got[first.ID()] == 1 && got[sched.ID()] == 1
	})

	// A scheduled message that dies parks nothing of its key.
	pub.setFail(func(m async.Message, _ int) error {
		if m.Metadata().GetString(async.MetaDeliverAt) != "" {
			return retry.Permanent(errors.New("poison"))
		}
		return nil
	})
	dying := scheduled("orders", "d", async.Metadata{async.MetaDeliverAt: async.FormatTime(clock.Now())})
	saveAll(t, store, dying)
	if id := <-obs.deadCh; id != dying.ID() {
		t.Fatalf("dead %s, want %s", id, dying.ID())
	}
	after := keyed("orders", "d")
	saveAll(t, store, after)
	waitFor(t, "the message after a dead scheduled one", 10*time.Second, func() bool { return pub.publishedIDs()[after.ID()] == 1 })
}

// expiryObserver records the relay's expiries.
type expiryObserver struct {
	*observer
	mu      sync.Mutex
	expired map[string]bool // ID → dropped
	ch      chan string
}

func newExpiryObserver() *expiryObserver {
	return &expiryObserver{observer: newObserver(), expired: map[string]bool{}, ch: make(chan string, 100)}
}

func (o *expiryObserver) Expired(m async.Message, dropped bool) {
	o.mu.Lock()
	o.expired[m.ID()] = dropped
	o.mu.Unlock()
	o.ch <- m.ID()
}

func TestRelayNeverPublishesExpiredMessages(t *testing.T) {
	t.Parallel()
	for _, drop := range []bool{false, true} {
		clock := newManualClock(-1)
		store := memstore.New(memstore.Config{Now: clock.Now})
		pub := newRecordingPublisher()
		obs := newExpiryObserver()
		p := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Clock: clock, PollInterval: time.Hour, Observer: obs, DropExpired: drop})
		gone := scheduled("prices", "k", async.Metadata{async.MetaExpiresAt: async.FormatTime(clock.Now())})
		fresh := scheduled("prices", "", async.Metadata{async.MetaExpiresAt: async.FormatTime(clock.Now().Add(time.Minute))})
		saveAll(t, store, gone, fresh)
		stop := startRelay(t, p)
		if id := <-obs.ch; id != gone.ID() {
			t.Fatalf("expired %s, want %s", id, gone.ID())
		}
		waitFor(t, "the unexpired message", 10*time.Second, func() bool { return pub.publishedIDs()[fresh.ID()] == 1 })
		stop()
		if n := pub.attemptsOf(gone.ID()); n != 0 {
			t.Errorf("drop %v: the expired message was published %d times", drop, n)
		}
		obs.mu.Lock()
		dropped := obs.expired[gone.ID()]
		obs.mu.Unlock()
		if dropped != drop {
			t.Errorf("Expired(dropped=%v), want %v", dropped, drop)
		}
		dead, err := store.Outbox().DeadLetters(context.Background(), txm.DeadLetterFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if drop {
			if len(dead) != 0 {
				t.Errorf("DropExpired: %d dead letters, want none", len(dead))
			}
			st, _ := store.Outbox().Stats(context.Background())
			if st.Pending != 0 {
				t.Errorf("DropExpired: %d pending, want the expired message gone", st.Pending)
			}
			continue
		}
		if len(dead) != 1 || dead[0].Message.ID() != gone.ID() || dead[0].LastError != txm.ExpiredCause {
			t.Fatalf("dead letters = %+v, want %s with cause %q", dead, gone.ID(), txm.ExpiredCause)
		}
		obs.observer.mu.Lock()
		derr := obs.observer.dead[gone.ID()]
		obs.observer.mu.Unlock()
		if !errors.Is(derr, txm.ErrExpired) {
			t.Errorf("Dead(err = %v), want ErrExpired", derr)
		}
	}
}

// TestRetryNeverPassesExpiry: a failed publish whose retry would come
// after the message's expiry expires the message instead.
func TestRetryNeverPassesExpiry(t *testing.T) {
	t.Parallel()
	clock := newManualClock(-1)
	store := memstore.New(memstore.Config{Now: clock.Now})
	pub := newRecordingPublisher()
	pub.setFail(func(async.Message, int) error { return errors.New("broker down") })
	obs := newExpiryObserver()
	slow := retry.Policy{InitialInterval: time.Minute, MaxInterval: time.Minute, Multiplier: 1, RandomizationFactor: -1}
	p := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Clock: clock, PollInterval: time.Hour, Observer: obs, Retry: slow, BreakerThreshold: -1})
	short := scheduled("prices", "", async.Metadata{async.MetaExpiresAt: async.FormatTime(clock.Now().Add(30 * time.Second))})
	long := scheduled("prices", "", async.Metadata{async.MetaExpiresAt: async.FormatTime(clock.Now().Add(time.Hour))})
	saveAll(t, store, short, long)
	startRelay(t, p)
	if id := <-obs.ch; id != short.ID() {
		t.Fatalf("expired %s, want %s", id, short.ID())
	}
	waitFor(t, "the retry of the long-lived message", 10*time.Second, func() bool {
		obs.observer.mu.Lock()
		defer obs.observer.mu.Unlock()
		return obs.observer.retried[long.ID()] == 1
	})
	if n := pub.attemptsOf(short.ID()); n != 1 {
		t.Errorf("the short-lived message was attempted %d times, want 1", n)
	}
	dead, err := store.Outbox().DeadLetters(context.Background(), txm.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Message.ID() != short.ID() || dead[0].LastError != txm.ExpiredCause {
		t.Fatalf("dead letters = %+v, want only %s, expired", dead, short.ID())
	}
}

// TestScheduledPublishWithin100ms is the real-time check on the memory
// store: with a one-minute poll, only the scheduled wake-up can publish
// the message, and it does so within 100 ms of its time.
func TestScheduledPublishWithin100ms(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	var mu sync.Mutex
	var at time.Time
	done := make(chan struct{})
	pub := async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
		mu.Lock()
		at = time.Now()
		mu.Unlock()
		close(done)
		return nil
	})
	p := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{PollInterval: time.Minute})
	startRelay(t, p)
	due := time.Now().Add(300 * time.Millisecond)
	msg := scheduled("reminders", "", async.Metadata{async.MetaDeliverAt: async.FormatTime(due)})
	saveAll(t, store, msg)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduled message was not published within 10s")
	}
	mu.Lock()
	late := at.Sub(due)
	mu.Unlock()
	if late < 0 || late > 100*time.Millisecond {
		t.Fatalf("published %v after its delivery time, want within [0, 100ms]", late)
	}
}

func TestInboxSkipsExpiredMessages(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	inbox := store.Inbox("billing")
	now := time.Unix(1_800_000_000, 0)
	var expired, handled int
	h := txm.InboxHandlerWithConfig(inbox, txm.InboxConfig{
		Now:       func() time.Time { return now },
		OnExpired: func(context.Context, async.IncomingMessage) { expired++ },
		Logger:    slog.New(slog.DiscardHandler),
	})(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { handled++; return nil }))
	old := incoming(scheduled("prices", "", async.Metadata{async.MetaExpiresAt: async.FormatTime(now)}))
	if err := h.HandleMessage(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if handled != 0 || expired != 1 || old.acks != 1 {
		t.Fatalf("expired delivery: handled %d, OnExpired %d, acks %d; want 0, 1, 1", handled, expired, old.acks)
	}
	// Nothing was recorded: the inbox still takes the ID.
	if err := inbox.Save(context.Background(), old); err != nil {
		t.Errorf("saving the skipped message's ID: %v, want it unrecorded", err)
	}
	fresh := incoming(scheduled("prices", "", async.Metadata{async.MetaExpiresAt: async.FormatTime(now.Add(time.Nanosecond))}))
	if err := h.HandleMessage(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	if handled != 1 || expired != 1 {
		t.Fatalf("unexpired delivery: handled %d, OnExpired %d; want 1, 1", handled, expired)
	}
}

// TestSeedStoreDropsExpiredMessages: a store with the three seed methods
// has no dead letters: the relay drops an expired message, marking it
// published without publishing it.
func TestSeedStoreDropsExpiredMessages(t *testing.T) {
	t.Parallel()
	store := &listStore{}
	gone := scheduled("prices", "", async.Metadata{async.MetaExpiresAt: async.FormatTime(time.Now().Add(-time.Second))})
	fresh := scheduled("prices", "", async.Metadata{})
	for _, m := range []async.Message{gone, fresh} {
		if err := store.Save(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	pub := newRecordingPublisher()
	obs := newExpiryObserver()
	startRelay(t, newRelay(t, pub, store, txm.ProcessorConfig{Observer: obs}))
	if id := <-obs.ch; id != gone.ID() {
		t.Fatalf("expired %s, want %s", id, gone.ID())
	}
	waitFor(t, "both messages settled", 10*time.Second, func() bool {
		left, _ := store.FindUnpublished(context.Background(), 10)
		return len(left) == 0
	})
	if pub.attemptsOf(gone.ID()) != 0 || pub.publishedIDs()[fresh.ID()] != 1 {
		t.Fatalf("attempts of the expired message %d, publishes of the fresh one %d; want 0, 1",
			pub.attemptsOf(gone.ID()), pub.publishedIDs()[fresh.ID()])
	}
}

// TestExpiryTravelsToTheConsumer: the typed outbox's TTL travels as the
// expires-at header through a broker (the memory broker here; natsjs
// carries metadata as headers alike), and the inbox skips a delivery that
// arrives after it while it handles one that arrives in time.
func TestExpiryTravelsToTheConsumer(t *testing.T) {
	t.Parallel()
	broker := memory.New(memory.Config{})
	defer func() { _ = broker.Close() }()
	store := memstore.New(memstore.Config{})
	now := time.Now()
	handled, skipped := make(chan string, 2), make(chan string, 2)
	typed := txm.NewInbox(func(_ context.Context, _ orderPlaced, msg async.IncomingMessage) error {
		handled <- msg.ID()
		return nil
	})
	h := txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{
		Now:       func() time.Time { return now },
		OnExpired: func(_ context.Context, msg async.IncomingMessage) { skipped <- msg.ID() },
		Logger:    slog.New(slog.DiscardHandler),
	})(typed)
	sub, err := broker.Subscribe(context.Background(), "prices", h, async.GroupName("billing"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	out := txm.NewOutbox[orderPlaced](broker)
	stale, err := out.Message("prices", orderPlaced{ID: "1"}, txm.WithExpiresAt(now.Add(-time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := out.Message("prices", orderPlaced{ID: "2"}, txm.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []async.Message{stale, fresh} {
		if err := broker.Publish(context.Background(), "prices", m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []struct {
		ch chan string
		id string
	}{{skipped, stale.ID()}, {handled, fresh.ID()}} {
		select {
		case id := <-want.ch:
			if id != want.id {
				t.Errorf("got %s, want %s", id, want.id)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %s neither handled nor skipped within 5s", want.id)
		}
	}
	select {
	case id := <-handled:
		t.Fatalf("handled %s as well", id)
	case id := <-skipped:
		t.Fatalf("skipped %s as well", id)
	default:
	}
}
