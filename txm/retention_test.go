package txm_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// manualClock is a clock that moves only when the test advances it. Waits
// of the retention interval are reported on passes, so that a test knows
// when a retention pass has ended.
type manualClock struct {
	interval time.Duration
	passes   chan struct{}

	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func newManualClock(interval time.Duration) *manualClock {
	return &manualClock{interval: interval, passes: make(chan struct{}, 16), now: time.Unix(1_700_000_000, 0)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, clockWaiter{c.now.Add(d), ch})
	c.mu.Unlock()
	if d == c.interval {
		c.passes <- struct{}{}
	}
	return ch
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// waitPass waits for the end of a retention pass.
func (c *manualClock) waitPass(t *testing.T) {
	t.Helper()
	select {
	case <-c.passes:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a retention pass")
	}
}

// countingPurger counts what its outbox's Purge deleted and how often it
// was called; every other method is the memstore outbox's.
type countingPurger struct {
	*memstore.Outbox
	mu      sync.Mutex
	calls   int
	deleted int
	limits  []int
}

func (p *countingPurger) Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	n, err := p.Outbox.Purge(ctx, olderThan, limit)
	p.mu.Lock()
	p.calls++
	p.deleted += n
	p.limits = append(p.limits, limit)
	p.mu.Unlock()
	return n, err
}

func (p *countingPurger) counts() (calls, deleted int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.deleted
}

// TestRelayRetentionPurgesOldPublished runs a relay with Retention on the
// memory store and an injected clock: a pass at start, then one per
// interval, deleting the messages published more than Published ago in
// batches of BatchSize, and none younger.
func TestRelayRetentionPurgesOldPublished(t *testing.T) {
	t.Parallel()
	const interval = 7 * time.Minute
	clock := newManualClock(interval)
	store := memstore.New(memstore.Config{Now: clock.Now})
	out := &countingPurger{Outbox: store.Outbox()}
	pub := newRecordingPublisher()
	p, err := txm.NewOutboxProcessorWithConfig(pub, out, txm.ProcessorConfig{
		Clock:     clock,
		Logger:    slog.New(slog.DiscardHandler),
		Retention: txm.RetentionConfig{Published: time.Hour, Interval: interval, BatchSize: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var msgs []async.Message
	for range 5 {
		m := async.NewMessage("orders", "Placed", []byte("{}"))
		if err := store.InTx(ctx, func(ctx context.Context) error { return out.Save(ctx, m) }); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	stop := startRelay(t, p)
	defer stop()
	waitFor(t, "5 publishes", 10*time.Second, func() bool { return len(pub.publishedIDs()) == 5 })
	// Marked too, before the clock moves: a mark after it would date the
	// messages 30 minutes later. (FindUnpublished would pass over the
	// messages the relay has claimed and not marked yet; Stats counts
	// them as pending.)
	waitFor(t, "5 marks", 10*time.Second, func() bool {
		st, err := store.Outbox().Stats(ctx)
		return err == nil && st.Pending == 0
	})
	clock.waitPass(t) // the pass at start

	clock.advance(30 * time.Minute) // younger than the window: kept
	clock.waitPass(t)
	if _, deleted := out.counts(); deleted != 0 {
		t.Fatalf("retention deleted %d messages published 30 minutes ago, want 0 (window 1h)", deleted)
	}

	clock.advance(time.Hour)
	clock.waitPass(t)
	calls, deleted := out.counts()
	if deleted != 5 {
		t.Fatalf("retention deleted %d messages published 90 minutes ago, want 5", deleted)
	}
	out.mu.Lock()
	for _, l := range out.limits {
		if l != 2 {
			t.Errorf("Purge called with limit %d, want BatchSize 2", l)
		}
	}
	out.mu.Unlock()
	if calls < 3+2 { // at least 3 batches for 5 rows, plus one per earlier pass
		t.Fatalf("%d Purge calls, want the 5 rows in batches of 2", calls)
	}
	// A purged message's ID can be saved again.
	if err := store.InTx(ctx, func(ctx context.Context) error { return out.Save(ctx, msgs[0]) }); err != nil {
		t.Fatalf("saving a purged ID again: %v", err)
	}
}

// TestRetentionConfigChecked refuses a relay with Retention on a store
// without Purge, and negative fields.
func TestRetentionConfigChecked(t *testing.T) {
	t.Parallel()
	pub := newRecordingPublisher()
	if _, err := txm.NewOutboxProcessorWithConfig(pub, &listStore{}, txm.ProcessorConfig{
		Retention: txm.RetentionConfig{Published: time.Hour},
	}); err == nil {
		t.Fatal("Retention on a store without Purge was accepted")
	}
	if _, err := txm.NewOutboxProcessorWithConfig(pub, memstore.New(memstore.Config{}).Outbox(), txm.ProcessorConfig{
		Retention: txm.RetentionConfig{Published: time.Hour, BatchSize: -1},
	}); err == nil {
		t.Fatal("a negative Retention.BatchSize was accepted")
	}
	if _, err := txm.NewOutboxProcessorWithConfig(pub, &listStore{}, txm.ProcessorConfig{}); err != nil {
		t.Fatalf("Retention off needs no Purger: %v", err)
	}
}

// TestRunRetentionPurgesInbox runs RunRetention on an inbox's PurgeInbox
// until its context ends.
func TestRunRetentionPurgesInbox(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	store := memstore.New(memstore.Config{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	in := store.Inbox("billing")
	ctx := context.Background()
	for range 3 {
		m := &testMessage{Message: async.NewMessage("orders", "Placed", nil)}
		if err := store.InTx(ctx, func(ctx context.Context) error { return in.Save(ctx, m) }); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	deleted := make(chan int, 16)
	purge := func(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
		n, err := in.PurgeInbox(ctx, olderThan, limit)
		deleted <- n
		return n, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- txm.RunRetention(rctx, purge, time.Hour, txm.RetentionConfig{Interval: time.Hour, BatchSize: 2})
	}()
	total := 0
	for total < 3 {
		select {
		case n := <-deleted:
			total += n
		case <-time.After(10 * time.Second):
			t.Fatalf("RunRetention deleted %d of 3 old inbox records", total)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("RunRetention returned %v, want context.Canceled", err)
	}
	if err := txm.RunRetention(ctx, nil, time.Hour, txm.RetentionConfig{}); !errors.Is(err, txm.ErrNilArgument) {
		t.Fatalf("RunRetention(nil) = %v, want ErrNilArgument", err)
	}
}
